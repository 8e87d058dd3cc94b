package app

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Subscription is what a handler binding asks of a transport: where to read
// and how much to take at once.
type Subscription struct {
	// Handler is the name of the handler the messages go to (for logs and
	// client identifiers).
	Handler string
	// Topic is the transport's address: an MQTT topic filter, a RabbitMQ
	// queue, an Aliyun topic filter, a memory topic.
	Topic string
	// Group is the consumer group: replicas in one group share the work.
	// Empty means every subscriber gets every message (where the transport
	// can do that).
	Group string
	// Concurrency is how many messages may be in flight (delivered, not yet
	// acked) at once: prefetch, Receive Maximum, link credit.
	Concurrency int
	// Options are transport-specific settings of this binding (for example
	// MQTT "qos"). Transports reject keys they do not know.
	Options map[string]string
}

// Transport is one messaging system, configured and ready to connect.
//
// The stop protocol relies on this contract for every subscriber a
// transport returns:
//
//   - Subscribe returns once the subscription is consuming: the broker will
//     deliver to it.
//   - Cancelling the context given to Subscribe stops intake: nothing new is
//     delivered, the output channel is closed, but messages already
//     delivered can still be acked or nacked, and those acks reach the
//     broker.
//   - A delivered message's context does not derive from the Subscribe
//     context (stopping intake must not cut handlers short); it ends when
//     the message is settled or the subscriber closes.
//   - Close settles what is still unsettled so that the broker redelivers it
//     (nack with requeue, AMQP release, MQTT: no ack), cancels the contexts
//     of those messages, then releases the subscriber's resources. Close may
//     be called after or without a context cancellation and more than once.
//
// And for its publisher:
//
//   - Publish returns nil only once the broker has taken the message (a
//     confirm, PUBACK, ...), for transports that can confirm.
//   - Close flushes and releases; it is called only after every handler has
//     stopped, so a handler never publishes through a closed publisher.
type Transport struct {
	// Name is the transport's name in configuration (memory, rabbitmq, mqtt, aliyun).
	Name string
	// Publisher returns a publisher for one event binding, configured by
	// the binding's transport-specific options (for example MQTT "qos",
	// "retain"; transports reject keys they do not know). Publishers of one
	// transport may share its connection. Nil for a consume-only transport.
	Publisher func(options map[string]string) (message.Publisher, error)
	// Subscriber returns a subscriber for one binding; nil for a
	// publish-only transport.
	Subscriber func(Subscription) (message.Subscriber, error)
	// CheckTarget verifies at start that what an event binding publishes
	// to exists (an exchange, a queue), so that a missing one stops the
	// start naming the binding instead of failing every publish; nil when
	// the transport cannot tell.
	CheckTarget func(ctx context.Context, topic string, options map[string]string) error
	// Ready reports whether the transport is connected; nil means ready.
	Ready func() error
	// Close closes the transport's connections. It runs last, after every
	// publisher and subscriber was closed. May be nil.
	Close func() error
}

// Opener connects a transport. Each transport module provides one into the
// "transports" value group; the runtime opens only the transports that some
// binding uses, in its start hook, so an unused transport never connects.
type Opener struct {
	Name string
	Open func(ctx context.Context) (*Transport, error)
}
