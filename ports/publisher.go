package ports

import "context"

// Event is an outgoing event. EventType is the key of its binding in
// configuration (events.<type>), which says where it is published; the
// event is encoded as JSON.
type Event interface {
	EventType() string
}

// Publisher publishes events.
//
// Publish returns nil only when every event was taken by its broker
// (confirmed, where the transport can confirm). Events published while
// handling a message carry that message's correlation ID. A handler that
// gets an error from Publish should return it (wrapped with %w if at all):
// its message is then retried and, if publishing still fails, handed back
// to its broker for redelivery — never poisoned, since the message is not
// at fault.
type Publisher interface {
	Publish(ctx context.Context, events ...Event) error
}
