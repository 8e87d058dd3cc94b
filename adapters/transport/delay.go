package transport

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Delayer is a Transport that parks a message on its broker for a while
// and then delivers it again to the subscription it came from, so that a
// delayed retry (retry.delayed, docs/retries.md) needs no store of its
// own. The runtime asks each handler binding's transport for it; a
// transport without it parks in the configured delay store instead.
//
// DeclareDelays is called at start, after Open and before the binding's
// Subscribe, with the binding's SubscriberConfig and topic and every delay
// it may use; it declares what Delay needs (RabbitMQ: a queue per delay)
// and fails with the reason when it cannot.
//
// Delay parks msg, delivered to a subscriber of sc on topic, for delay
// (one of the declared delays). It returns nil only once the broker has
// taken msg durably (a publisher confirm): the runtime then acks the
// original delivery. msg's UUID, payload and metadata travel with it, and
// after the delay it is delivered again to the same subscription (as a
// new delivery; for RabbitMQ its topic is the queue's name). ctx bounds
// the call. A restart of the service or of the broker (durable queues)
// does not lose a parked message.
//
// The transport closes what Delay uses in its Close.
type Delayer interface {
	DeclareDelays(ctx context.Context, sc SubscriberConfig, topic string, delays []time.Duration) error
	Delay(ctx context.Context, sc SubscriberConfig, topic string, delay time.Duration, msg *message.Message) error
}
