package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/ports"
)

// poison sends a message whose handler failed for good to the poison
// target, with the metadata of watermill's poison queue middleware
// (reason_poisoned, topic_poisoned, handler_poisoned, subscriber_poisoned:
// the transport), and then lets it be acked. watermill's own middleware
// reads the handler, topic and subscriber from context values only its
// router can set. A handler cut short by stop, one whose events could not
// be published, or one that found the database unavailable is handed back
// instead: the message itself is fine. If the poison publish fails, the
// message is handed back too.
func (r *Runtime) poison(handler string, b Binding) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			produced, err := h(msg)
			o := outcomeOf(msg)
			switch {
			case err == nil:
				return produced, nil
			case r.abort.Err() != nil:
				o.set(handedBackStopping)
				return produced, err
			case errors.Is(err, ErrPublish):
				o.set(handedBackPublish)
				return produced, err
			case r.db != nil && !errors.Is(err, ports.ErrInvalid) && postgres.Unavailable(err):
				o.set(handedBackDatabase)
				return produced, err
			}
			msg.Metadata.Set(middleware.ReasonForPoisonedKey, err.Error())
			msg.Metadata.Set(middleware.PoisonedTopicKey, b.Topic)
			msg.Metadata.Set(middleware.PoisonedHandlerKey, handler)
			msg.Metadata.Set(middleware.PoisonedSubscriberKey, b.Transport)
			poisoned(msg.Context(), err)
			if perr := r.publishers.send(msg.Context(), r.publishers.poisonTo, msg); perr != nil {
				o.set(handedBackPoison)
				return nil, errors.Join(err, fmt.Errorf("publish to the poison target: %w", perr))
			}
			if errors.Is(err, ports.ErrInvalid) {
				o.set(poisonedInvalid)
			} else {
				o.set(poisonedRetries)
			}
			r.logger.WarnContext(msg.Context(), "message poisoned", "handler", handler, "message_id", msg.UUID, "reason", err)
			return nil, nil
		}
	}
}

// outcome is what the poison middleware did with a message, for the
// metrics middleware around it: "" when the handler succeeded (or the
// message failed another way), else one of the outcomes below.
type outcome struct{ what string }

// Outcomes: the reason classes of the poison and redelivery counters.
const (
	poisonedInvalid    = "invalid"              // ports.Invalid: bad input, poisoned at once
	poisonedRetries    = "retries_exhausted"    // failed after every retry
	handedBackPublish  = "publish_failed"       // its events could not be published
	handedBackPoison   = "poison_failed"        // the poison target refused it
	handedBackDatabase = "database_unavailable" // PostgreSQL could not be used (postgres.Unavailable)
	handedBackStopping = "stopping"             // cut short by stop
)

func (o *outcome) set(what string) {
	if o != nil {
		o.what = what
	}
}

type outcomeKey struct{}

// withOutcome gives msg an outcome the middleware inside can set.
func withOutcome(msg *message.Message) *outcome {
	o := &outcome{}
	msg.SetContext(context.WithValue(msg.Context(), outcomeKey{}, o))
	return o
}

// outcomeOf is msg's outcome, nil when nobody asked for it.
func outcomeOf(msg *message.Message) *outcome {
	o, _ := msg.Context().Value(outcomeKey{}).(*outcome)
	return o
}
