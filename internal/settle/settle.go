// Package settle is the contract between a subscriber and a consumer that
// settles each message itself, once, when it is done with it: the runtime
// (app) does, through its in-flight middleware.
//
// A watermill subscriber learns a message's fate by waiting on its Acked
// and Nacked channels, which takes a goroutine per message in flight. A
// subscriber that supports this contract, subscribed with a ByConsumer
// context, puts a Settler in each message's context instead; the consumer
// calls it exactly once per message, and the subscriber then ignores Ack
// and Nack. A message the consumer never settles stays unsettled until the
// subscriber closes, and goes back to its broker.
package settle

import "context"

// Settler settles one message: acked true acknowledges it to the broker,
// false hands it back for redelivery (a nack). Only the first call counts.
type Settler interface {
	Settle(acked bool)
}

type key struct{}

// With returns a child of ctx that carries s.
func With(ctx context.Context, s Settler) context.Context {
	return context.WithValue(ctx, key{}, s)
}

// From returns the Settler in ctx, nil when there is none: then the
// message is settled through Ack and Nack as watermill's are.
func From(ctx context.Context) Settler {
	s, _ := ctx.Value(key{}).(Settler)
	return s
}

type byConsumerKey struct{}

// ByConsumer returns a child of ctx that, given to Subscribe, promises
// that the consumer settles every message of the subscription through the
// Settler in its context: the subscriber then ignores Ack and Nack.
func ByConsumer(ctx context.Context) context.Context {
	return context.WithValue(ctx, byConsumerKey{}, true)
}

// IsByConsumer reports whether the Subscribe context ctx carries the
// promise of ByConsumer.
func IsByConsumer(ctx context.Context) bool {
	v, _ := ctx.Value(byConsumerKey{}).(bool)
	return v
}
