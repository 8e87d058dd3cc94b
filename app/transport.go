package app

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
)

// SubscriberConfig is what a handler binding asks of a transport's
// subscriber: the handler's name, its consumer group, how many messages may
// be in flight at once, the binding's transport-specific options. The
// topic goes to Subscribe.
type SubscriberConfig = transport.SubscriberConfig

// Transport is one messaging system, configured (by its adapter's New,
// which connects nothing) and ready to Open. Every adapter's *Transport
// (adapters/memory, mqtt, rabbitmq, aliyun) is one, as is a transport of a
// service's own added with AsTransport.
//
// Open connects, and fails with the reason a misconfiguration shows
// (credentials, TLS, a topology mismatch). Publisher returns a publisher
// for one event binding, configured by the binding's transport-specific
// options (for example MQTT "qos", "retain"; transports reject keys they do
// not know); publishers of one transport may share its connection; a
// consume-only transport returns an error. Subscriber returns a subscriber
// for one handler binding; a publish-only transport returns an error.
// Ready reports nil while the transport is connected. Close closes the
// transport's connections; it runs last, after every publisher and
// subscriber was closed.
//
// The stop protocol relies on this contract for every subscriber a
// transport returns:
//
//   - Subscribe returns once the subscription is consuming: the broker will
//     deliver to it.
//   - Cancelling the context given to Subscribe stops intake: nothing new is
//     delivered, the output channel is closed, but messages already
//     delivered can still be settled, and those settles reach the broker.
//   - A delivered message's context does not derive from the Subscribe
//     context (stopping intake must not cut handlers short); it ends when
//     the message is settled or the subscriber closes.
//   - Each delivered message is settled once: through the settle.Settler
//     its subscriber put in its context (internal/settle) when there is
//     one, else through Ack and Nack. The runtime subscribes with a
//     settle.ByConsumer context: a subscriber that gives Settlers need
//     not wait on Ack and Nack.
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
type Transport interface {
	Open(ctx context.Context) error
	Publisher(options map[string]string) (message.Publisher, error)
	Subscriber(SubscriberConfig) (message.Subscriber, error)
	Ready() error
	Close() error
}

// TargetChecker is a Transport that can verify at start that what an event
// binding publishes to exists (an exchange, a queue), so that a missing one
// stops the start naming the binding instead of failing every publish.
type TargetChecker interface {
	CheckTarget(ctx context.Context, topic string, options map[string]string) error
}

// Opener opens a transport. Each transport module provides one into the
// "transports" value group; the runtime opens only the transports that some
// binding uses, in its start hook, so an unused transport never connects.
type Opener struct {
	Name string
	Open func(ctx context.Context) (Transport, error)
}

// open makes a transport with newT and opens it; newT's error is about
// the configuration section of the transport name.
func open(ctx context.Context, name string, newT func() (Transport, error)) (Transport, error) {
	t, err := newT()
	if err != nil {
		return nil, sectionError("transports."+name, err)
	}
	if err := t.Open(ctx); err != nil {
		_ = t.Close()
		return nil, err
	}
	return t, nil
}
