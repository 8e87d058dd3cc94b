package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// poisoner sends a message whose handler failed for good to the poison
// target, with the metadata of watermill's poison queue middleware
// (reason_poisoned, topic_poisoned, handler_poisoned, subscriber_poisoned:
// the transport), and then lets it be acked. watermill's own middleware
// reads the handler, topic and subscriber from context values only its
// router can set. A handler cut short by stop, one whose events could not
// be published, or one that found the database unavailable is handed back
// instead: the message itself is fine. If the poison publish fails, the
// message is handed back too.
type poisoner struct {
	handler    string
	binding    config.Binding
	abort      context.Context // ends when stop gives up on the drain
	database   bool            // PostgreSQL is on
	publishers *eventPublisher
	logger     *slog.Logger
}

func (p poisoner) middleware(h message.HandlerFunc) message.HandlerFunc {
	handler, b := p.handler, p.binding
	return func(msg *message.Message) ([]*message.Message, error) {
		produced, err := h(msg)
		o := deliveryOf(msg.Context())
		switch {
		case err == nil:
			return produced, nil
		case p.abort.Err() != nil:
			o.set(handedBackStopping)
			return produced, err
		case errors.Is(err, ErrPublish):
			o.set(handedBackPublish)
			return produced, err
		case p.database && !errors.Is(err, ports.ErrInvalid) && postgres.Unavailable(err):
			o.set(handedBackDatabase)
			return produced, err
		}
		msg.Metadata.Set(middleware.ReasonForPoisonedKey, err.Error())
		msg.Metadata.Set(middleware.PoisonedTopicKey, b.Topic)
		msg.Metadata.Set(middleware.PoisonedHandlerKey, handler)
		msg.Metadata.Set(middleware.PoisonedSubscriberKey, b.Transport)
		poisoned(msg.Context(), err)
		if perr := p.publishers.send(msg.Context(), p.publishers.poisonTo, msg); perr != nil {
			o.set(handedBackPoison)
			return nil, errors.Join(err, fmt.Errorf("publish to the poison target: %w", perr))
		}
		if errors.Is(err, ports.ErrInvalid) {
			o.set(poisonedInvalid)
		} else {
			o.set(poisonedRetries)
		}
		p.logger.WarnContext(msg.Context(), "message poisoned", "handler", handler, "message_id", msg.UUID, "reason", err)
		return nil, nil
	}
}
