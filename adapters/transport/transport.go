// Package transport is the contract between the runtime (app) and the
// adapters that connect it to a broker: what a Transport is, how its
// subscribers hand messages out and learn their fate (Settler, Handout),
// the optional interfaces the runtime looks for, and the helpers every
// adapter's configuration shares (secret, tlsfiles).
//
// It sits one floor above ports: it imports ports and watermill's message
// package, never an adapter or app. Adapters import it and nothing above
// it; app imports it and the adapters. The architecture test
// (internal/architecture) enforces the floors.
//
// transporttest runs one contract suite against a transport's subscribers;
// every adapter in this repository runs it against its real broker.
package transport

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Transport is one messaging system, configured (by its adapter's New,
// which connects nothing) and ready to Open. Every adapter's *Transport
// (adapters/memory, mqtt, rabbitmq, aliyun) is one, as is a transport of a
// service's own added with app.AsTransport.
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
// transport returns (transporttest checks it):
//
//   - Subscribe returns once the subscription is consuming: the broker will
//     deliver to it.
//   - Cancelling the context given to Subscribe stops intake: nothing new is
//     delivered, the output channel is closed, but messages already
//     delivered can still be settled, and those settles reach the broker.
//   - A delivered message's context does not derive from the Subscribe
//     context (stopping intake must not cut handlers short); it ends when
//     the message is settled or the subscriber closes.
//   - Each delivered message is settled once, through the Settler in its
//     context (SettlerFrom); Ack and Nack are bridged onto it unless the
//     Subscribe context is SettledByConsumer. A Handout does all of this
//     for a subscriber.
//   - Close settles what is still unsettled so that the broker redelivers it
//     (nack with requeue, AMQP release, MQTT: no ack), which ends the
//     contexts of those messages, then releases the subscriber's resources.
//     Close may be called after or without a context cancellation and more
//     than once.
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

// SubscriberConfig configures the subscriber of one handler binding. Every
// adapter takes it as it is; what is particular to one broker is in
// Options.
type SubscriberConfig struct {
	// Handler is the name of the handler the messages go to: in logs,
	// client identifiers, consumer tags.
	Handler string
	// Group is the consumer group: replicas in one group share the work.
	// Empty means every subscriber gets every message (where the transport
	// can do that).
	Group string
	// Concurrency is how many messages may be in flight (delivered, not yet
	// settled) at once: prefetch, Receive Maximum, link credit. Below 1
	// means 1.
	Concurrency int
	// MaxMessageBytes is the binding's largest message (payload bytes);
	// 0 means the transport's own max_message_bytes. An adapter uses it
	// where its wire can refuse larger messages (MQTT Maximum Packet
	// Size, AMQP 1.0 max-message-size); the runtime poisons a larger
	// message that still arrives, before it is decoded.
	MaxMessageBytes int
	// Options are the binding's transport-specific settings (for example
	// MQTT "qos"). Transports reject keys they do not know.
	Options map[string]string
}

// TargetChecker is a Transport that can verify at start that what an event
// binding publishes to exists (an exchange, a queue), so that a missing one
// stops the start naming the binding instead of failing every publish.
type TargetChecker interface {
	CheckTarget(ctx context.Context, topic string, options map[string]string) error
}

// Stopper is a Transport whose closing calls may wait for a broker's
// answer: the runtime calls Stopping when the stop protocol begins, with
// the stop's context, and the transport gives up on such waits (closing
// its sockets) before that context ends, so that the stop ends by its own
// deadline.
type Stopper interface {
	Stopping(ctx context.Context)
}

// OptionsChecker is a transport's configuration section that validates a
// binding's options before anything connects, so that a typo fails the
// configuration check, not the first publish. consume is true for a
// handler binding, false for an event binding. A *ports.FieldError names
// the option; any other error is about the options as a whole.
type OptionsChecker interface {
	CheckBindingOptions(consume bool, options map[string]string) error
}

// Defaulter is a configuration section that fills in its defaults; the
// runtime calls SetDefaults before Validate.
type Defaulter interface {
	SetDefaults()
}

// Validator is a configuration section that tells what is wrong with it:
// the error names the setting and what to do.
type Validator interface {
	Validate() error
}
