package load

import (
	"context"
	"errors"
	"fmt"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// rabbitLink is one AMQP 0-9-1 connection and channel in confirm mode;
// publications are pipelined and confirmed by the broker's acks. They are
// mandatory: a message no queue takes comes back, which is an error.
type rabbitLink struct {
	cfg     *SendConfig
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
}

func rabbitDialer(cfg *SendConfig) dialFunc {
	return func(ctx context.Context, i int) (link, error) {
		conn, err := dialRabbit(ctx, cfg.URL, fmt.Sprintf("%s-%s-%d", cfg.ClientIDPrefix, cfg.RunID, i))
		if err != nil {
			return nil, err
		}
		ch, err := conn.Channel()
		if err == nil {
			err = ch.Confirm(false)
		}
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("rabbitmq: channel: %w", err)
		}
		// Returns arrive before the ack of the same message; the buffer
		// holds one per message in flight.
		l := &rabbitLink{cfg: cfg, conn: conn, ch: ch, returns: make(chan amqp.Return, cfg.Window+1)}
		ch.NotifyReturn(l.returns)
		return l, nil
	}
}

// dialRabbit connects to an AMQP 0-9-1 URL within ctx.
func dialRabbit(ctx context.Context, rawURL, name string) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(name)
	type result struct {
		conn *amqp.Connection
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := amqp.DialConfig(rawURL, amqp.Config{Properties: props})
		done <- result{conn, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("rabbitmq: connect: %w", r.err)
		}
		return r.conn, nil
	case <-ctx.Done():
		// The dial has its own 30 s timeout: wait for it, then drop it.
		if r := <-done; r.err == nil {
			_ = r.conn.Close()
		}
		return nil, fmt.Errorf("rabbitmq: connect: %w", ctx.Err())
	}
}

func (l *rabbitLink) send(ctx context.Context, m *message) (confirm, error) {
	key := strings.ReplaceAll(l.cfg.RoutingKey, "{device_id}", DeviceID(l.cfg.RunID, m.device))
	dc, err := l.ch.PublishWithDeferredConfirmWithContext(ctx, l.cfg.Exchange, key, true, false, amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    messageID(l.cfg.RunID, m.seq),
		Body:         telemetryJSON(l.cfg.RunID, m),
	})
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: publish: %w", err)
	}
	return func(ctx context.Context) error {
		acked, err := dc.WaitContext(ctx)
		if err != nil {
			return fmt.Errorf("rabbitmq: confirm: %w", err)
		}
		select {
		case r, ok := <-l.returns:
			if ok { // closed with the channel otherwise
				return fatalError{fmt.Errorf("rabbitmq: unroutable: no queue takes exchange %q routing key %q (%s)", r.Exchange, r.RoutingKey, r.ReplyText)}
			}
		default:
		}
		if !acked {
			return errors.New("rabbitmq: nacked or channel closed")
		}
		return nil
	}, nil
}

func (l *rabbitLink) close() {
	_ = l.conn.Close()
}
