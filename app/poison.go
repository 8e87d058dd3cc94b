package app

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
)

// poison sends a message whose handler failed for good to the poison
// target, with the metadata of watermill's poison queue middleware
// (reason_poisoned, topic_poisoned, handler_poisoned, subscriber_poisoned:
// the transport), and then lets it be acked. watermill's own middleware
// reads the handler, topic and subscriber from context values only its
// router can set. A handler cut short by stop,
// or one whose events could not be published, is handed back instead: the
// message itself is fine. If the poison publish fails, the message is
// handed back too.
func (r *Runtime) poison(handler string, b Binding) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			produced, err := h(msg)
			if err == nil || r.abort.Err() != nil || errors.Is(err, ErrPublish) {
				return produced, err
			}
			msg.Metadata.Set(middleware.ReasonForPoisonedKey, err.Error())
			msg.Metadata.Set(middleware.PoisonedTopicKey, b.Topic)
			msg.Metadata.Set(middleware.PoisonedHandlerKey, handler)
			msg.Metadata.Set(middleware.PoisonedSubscriberKey, b.Transport)
			poisoned(msg.Context(), err)
			if perr := r.publishers.send(msg.Context(), r.publishers.poisonTo, msg); perr != nil {
				return nil, errors.Join(err, fmt.Errorf("publish to the poison target: %w", perr))
			}
			r.logger.WarnContext(msg.Context(), "message poisoned", "handler", handler, "message_id", msg.UUID, "reason", err)
			return nil, nil
		}
	}
}
