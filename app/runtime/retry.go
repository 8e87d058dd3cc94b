package runtime

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

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
}

func (r retry) middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		delay := r.cfg.InitialInterval
		for attempt := 1; err != nil && attempt <= r.cfg.MaxRetries; attempt++ {
			if errors.Is(err, ports.ErrInvalid) || r.abort.Err() != nil {
				return out, err
			}
			retried(msg.Context(), attempt, err)
			r.logger.WarnContext(msg.Context(), "handler failed, retrying", "handler", r.handler,
				"message_id", msg.UUID, "attempt", attempt, "max_retries", r.cfg.MaxRetries, "delay", delay, "err", err)
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
