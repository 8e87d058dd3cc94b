// How a subscriber learns a message's fate: every adapter's subscriber
// puts a Settler in each message's context, and settles the message
// through it only, once.
//
// A consumer that settles through the Settler (the runtime's in-flight
// middleware does) says so on the context it gives to Subscribe
// (SettledByConsumer): the subscriber then ignores Ack and Nack and needs
// no goroutine per message in flight. For any other consumer (watermill's
// router, watermill's pub/sub tests) the subscriber bridges Ack and Nack
// onto the same Settler, a goroutine per message (Handout does both).
//
// A message nobody settles stays unsettled until its subscriber closes,
// and goes back to its broker then.

package transport

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Settler settles one message: acked true acknowledges it to the broker,
// false hands it back for redelivery (a nack). Only the first call counts.
type Settler interface {
	Settle(acked bool)
}

type settlerKey struct{}

// WithSettler returns a child of ctx that carries s.
func WithSettler(ctx context.Context, s Settler) context.Context {
	return context.WithValue(ctx, settlerKey{}, s)
}

// SettlerFrom returns the Settler in ctx, nil when there is none: then the
// message is settled through Ack and Nack as watermill's are.
func SettlerFrom(ctx context.Context) Settler {
	s, _ := ctx.Value(settlerKey{}).(Settler)
	return s
}

type byConsumerKey struct{}

// SettledByConsumer returns a child of ctx that, given to Subscribe, promises
// that the consumer settles every message of the subscription through the
// Settler in its context: the subscriber then ignores Ack and Nack.
func SettledByConsumer(ctx context.Context) context.Context {
	return context.WithValue(ctx, byConsumerKey{}, true)
}

// IsSettledByConsumer reports whether the Subscribe context ctx carries the
// promise of SettledByConsumer; when it does not, the subscriber bridges each
// message's Ack and Nack onto its Settler (Handout does).
func IsSettledByConsumer(ctx context.Context) bool {
	v, _ := ctx.Value(byConsumerKey{}).(bool)
	return v
}

// awaitAck settles msg through s once its consumer acks or nacks it. done is
// the Done channel of the context the subscriber gave msg: it closes when
// msg is settled otherwise or its subscriber closes, and awaitAck then
// returns, settling an ack given by then (an ack given before Close still
// goes out). The Handout runs awaitAck on a goroutine it waits for.
func awaitAck(msg *message.Message, s Settler, done <-chan struct{}) {
	select {
	case <-msg.Acked():
		s.Settle(true)
	case <-msg.Nacked():
		s.Settle(false)
	case <-done:
		if acked(msg) {
			s.Settle(true)
		}
	}
}

// acked reports whether msg was acked (message.Ack), without waiting: at
// Close, a subscriber that bridges Ack settles an acked message as acked
// and hands back the others.
func acked(msg *message.Message) bool {
	select {
	case <-msg.Acked():
		return true
	default:
		return false
	}
}
