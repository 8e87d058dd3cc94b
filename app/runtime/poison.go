package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/adapters/transport"
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
	// maxBytes is the binding's largest payload: a larger one is
	// poisoned (too_large) without running the handler.
	maxBytes int
	// maxHandbacks poisons a message (handed_back_too_often) instead of
	// handing it back once more; 0 never. handbacks counts them.
	maxHandbacks int
	handbacks    *handbacks
	// retry is the backoff a message waits before it is handed back.
	retry config.RetryConfig
	// delayed parks a message that failed after the in-process retries
	// for its next delayed retry; nil: none.
	delayed *parker
}

func (p poisoner) middleware(h message.HandlerFunc) message.HandlerFunc {
	b := p.binding
	return func(msg *message.Message) ([]*message.Message, error) {
		o := deliveryOf(msg.Context())
		if p.maxBytes > 0 && len(msg.Payload) > p.maxBytes {
			// Never decoded nor handled: the handler's chain inside
			// does not run.
			err := fmt.Errorf("%s: the payload has %d bytes, above max_message_bytes %d", ReasonTooLarge, len(msg.Payload), p.maxBytes)
			return p.poison(msg, err, poisonedTooLarge, true)
		}
		produced, err := h(msg)
		var back outcome
		switch {
		case err == nil:
			if p.handbacks != nil {
				p.handbacks.forget(msg, b.Topic)
			}
			return produced, nil
		case p.abort.Err() != nil:
			o.set(handedBackStopping)
			return produced, err
		case errors.Is(err, ErrPublish) && !errors.Is(err, transport.ErrMessageTooLarge):
			back = handedBackPublish // the broker may take it later
		case p.database && !errors.Is(err, ports.ErrInvalid) && postgres.Unavailable(err):
			back = handedBackDatabase
		}
		if back != "" {
			if p.handbacks == nil {
				o.set(back)
				return produced, err
			}
			n := p.handbacks.add(handbackKey(msg, b.Topic))
			if p.maxHandbacks == 0 || n <= p.maxHandbacks {
				wait(msg.Context(), p.abort, handbackDelay(p.retry, n))
				o.set(back)
				return produced, err
			}
			err = fmt.Errorf("%s: %w", handbackReason(n-1, err), err)
			return p.poison(msg, err, poisonedHandbacks, false)
		}
		if p.delayed != nil && !errors.Is(err, ports.ErrInvalid) {
			return p.delayed.handle(p, msg, err)
		}
		outcome := poisonedRetries
		if errors.Is(err, ports.ErrInvalid) {
			outcome = poisonedInvalid
		}
		return p.poison(msg, err, outcome, false)
	}
}

// poison sends msg to the poison target with err as its reason and lets
// it be acked; when the poison target refuses it, msg is handed back.
// tooLarge sends only the head of its payload.
func (p poisoner) poison(msg *message.Message, err error, reason outcome, tooLarge bool) ([]*message.Message, error) {
	handler, b, o := p.handler, p.binding, deliveryOf(msg.Context())
	detachMetadata(msg)
	msg.Metadata.Set(middleware.ReasonForPoisonedKey, transport.Truncate(err.Error(), transport.MetadataValueBytes))
	msg.Metadata.Set(middleware.PoisonedTopicKey, b.Topic)
	msg.Metadata.Set(middleware.PoisonedHandlerKey, handler)
	msg.Metadata.Set(middleware.PoisonedSubscriberKey, b.Transport)
	stampPoisoned(msg)
	poisoned(msg.Context(), errors.New(transport.Truncate(err.Error(), transport.MetadataValueBytes)))
	if perr := p.publishers.send(msg.Context(), p.publishers.poisonTo, poisonCopy(msg, tooLarge)); perr != nil {
		o.set(handedBackPoison)
		return nil, errors.Join(err, fmt.Errorf("publish to the poison target: %w", perr))
	}
	if p.handbacks != nil {
		p.handbacks.forget(msg, b.Topic)
	}
	o.set(reason)
	p.logger.WarnContext(msg.Context(), "message poisoned", "handler", handler, "message_id", msg.UUID,
		"reason", transport.Truncate(err.Error(), transport.MetadataValueBytes))
	return nil, nil
}
