package runtime

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/ports"
)

// delivery is a message's state on its way through the chain, made once
// by the chain's outermost link and read inside: what the poison link did
// with the message (for the metrics link around it), and the name of its
// handler, for the metrics of what the handler publishes: a publish knows
// only the context it is given. Links know their handler from the chain
// (chainParams), not from here.
//
// It is the message's context too: the one the message came with, and
// the delivery and the message's correlation ID as values, in one
// allocation where context.WithValue would add one each.
type delivery struct {
	context.Context
	handler string
	outcome outcome
	// correlationID is set once, by the handler's link before the first
	// attempt runs the handler, and only read after.
	correlationID string
}

type deliveryKey struct{}

// Value implements context.Context: the delivery, its correlation ID, or
// what the message's own context carries.
func (d *delivery) Value(key any) any {
	switch key {
	case deliveryKey{}:
		return d
	case ports.CorrelationIDKey{}:
		if d.correlationID != "" {
			return d.correlationID
		}
	}
	return d.Context.Value(key)
}

// AfterFunc lets contexts derived from the delivery (a handler_timeout's,
// a handler's own) end with it through the message's context, as
// context.AfterFunc does, where the context package would otherwise
// start a goroutine per derived context to wait for it.
func (d *delivery) AfterFunc(f func()) (stop func() bool) {
	if a, ok := d.Context.(interface{ AfterFunc(func()) func() bool }); ok {
		return a.AfterFunc(f)
	}
	return context.AfterFunc(d.Context, f)
}

// newDelivery gives each message its delivery, as its context.
func newDelivery(handler string) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			msg.SetContext(&delivery{Context: msg.Context(), handler: handler})
			return h(msg)
		}
	}
}

// deliveryOf is the delivery ctx belongs to; nil outside a handler's chain.
func deliveryOf(ctx context.Context) *delivery {
	d, _ := ctx.Value(deliveryKey{}).(*delivery)
	return d
}

// handlerName is the name of the handler ctx belongs to, "" outside one.
func handlerName(ctx context.Context) string {
	if d := deliveryOf(ctx); d != nil {
		return d.handler
	}
	return ""
}

// outcome is what the poison link did with a message, for the metrics
// link around it: "" when the handler succeeded (or the message failed
// another way), else one of the outcomes below.
type outcome string

// Outcomes: the reason classes of the poison and redelivery counters.
const (
	poisonedInvalid    outcome = "invalid"                // ports.Invalid: bad input, poisoned at once
	poisonedRetries    outcome = "retries_exhausted"      // failed after every retry
	poisonedTooLarge   outcome = ReasonTooLarge           // above max_message_bytes, never handled
	poisonedHandbacks  outcome = ReasonHandedBackTooOften // handed back more than max_handbacks times
	handedBackPublish  outcome = "publish_failed"         // its events could not be published
	handedBackPoison   outcome = "poison_failed"          // the poison target refused it
	handedBackDatabase outcome = "database_unavailable"   // PostgreSQL could not be used (postgres.Unavailable)
	handedBackStopping outcome = "stopping"               // cut short by stop
	handedBackPark     outcome = "park_failed"            // could not be parked for its delayed retry
	parkedDelayed      outcome = "delayed"                // parked for a delayed retry (acked)
)

// set records what became of d's message; a nil d (a chain without the
// delivery link, in tests) records nothing.
func (d *delivery) set(o outcome) {
	if d != nil {
		d.outcome = o
	}
}
