package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// retry runs a failing handler again with exponential backoff. Unlike
// watermill's Retry middleware it costs nothing on the path where the
// handler succeeds (no backoff state per message), and it gives up at once
// on invalid input and when the runtime aborts handlers at stop.
type retry struct {
	handler string
	cfg     config.RetryConfig
	abort   context.Context
	logger  *slog.Logger
	// timeout bounds each attempt (handler_timeout): the attempt's
	// context is cancelled then, and the attempt fails; 0 no bound.
	timeout time.Duration
}

func (r retry) middleware(h message.HandlerFunc) message.HandlerFunc {
	if r.timeout > 0 {
		h = r.bounded(h)
	}
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		delay := r.cfg.InitialInterval
		for attempt := 1; err != nil && attempt <= r.cfg.MaxRetries; attempt++ {
			if errors.Is(err, ports.ErrInvalid) || r.abort.Err() != nil {
				return out, err
			}
			retried(msg.Context(), attempt, err)
			r.logger.WarnContext(msg.Context(), "handler failed, retrying", "handler", r.handler,
				"message_id", msg.UUID, "attempt", attempt, "max_retries", r.cfg.MaxRetries, "delay", delay, "err", transport.Truncate(err.Error(), transport.MetadataValueBytes))
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
			case <-msg.Context().Done():
				timer.Stop()
				return out, err
			case <-r.abort.Done():
				timer.Stop()
				return out, err
			}
			delay = min(time.Duration(float64(delay)*r.cfg.Multiplier), r.cfg.MaxInterval)
			out, err = h(msg)
		}
		return out, err
	}
}

// bounded runs each attempt of h with a context that ends after
// r.timeout: a handler that honours its context returns then, and the
// attempt fails with ErrHandlerTimeout, so that a hung handler is retried
// (then poisoned) instead of holding its message, and on MQTT every later
// ack, for ever. A handler that ignores its context cannot be stopped.
func (r retry) bounded(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		parent := msg.Context()
		ctx, cancel := context.WithTimeout(parent, r.timeout)
		msg.SetContext(ctx)
		out, err := h(msg)
		msg.SetContext(parent)
		timedOut := ctx.Err() == context.DeadlineExceeded && parent.Err() == nil
		cancel()
		if err != nil && timedOut {
			err = fmt.Errorf("%w (handler_timeout %s): %w", ErrHandlerTimeout, r.timeout, err)
		}
		return out, err
	}
}

// ErrHandlerTimeout is the error of a handler attempt that took longer
// than its binding's handler_timeout.
var ErrHandlerTimeout = errors.New("handler timed out")
