package dlq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

// channeler opens AMQP channels: the RabbitMQ transport.
type channeler interface {
	Channel(ctx context.Context) (*amqp.Channel, error)
}

// rabbitStore is a RabbitMQ poison queue. Every command reads the queue
// with basic.get on one channel, up to Filter.Max messages, settles what
// it selected as it reads it (ack after a confirmed republish, or for a
// purge) and requeues the rest (nack with requeue) before it returns; a
// crash requeues every unsettled message with the connection. It holds
// one message at a time: the broker holds the unsettled ones.
type rabbitStore struct {
	t     transport.Transport
	ch    *amqp.Channel
	queue string
}

// openRabbit opens the channel on t and declares queue if absent
// (durable, with the broker's defaults), so that listing an empty DLQ
// works before anything was poisoned.
func openRabbit(ctx context.Context, t transport.Transport, queue string) (*rabbitStore, error) {
	c, ok := t.(channeler)
	if !ok {
		return nil, fmt.Errorf("transport %T cannot open AMQP channels", t)
	}
	ch, err := c.Channel(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil); err != nil {
		// A failed passive declare closes the channel.
		if ch, err = c.Channel(ctx); err != nil {
			return nil, err
		}
		if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
			_ = ch.Close()
			return nil, fmt.Errorf("declare the poison queue %q: %w", queue, err)
		}
	}
	return &rabbitStore{t: t, ch: ch, queue: queue}, nil
}

// errStop ends a scan early, without error.
var errStop = errors.New("stop")

// scan gets the queue's messages one by one, unacked, up to f.Max, and
// hands each that f selects to act, which reports whether it acked it.
// It holds one message at a time: the broker keeps the unacked ones, and
// one nack with multiple set requeues all it did not ack (up to the last
// of them) before it returns. It stops at act's first error (errStop:
// no error), and with a maxError once it has read f.Max and there are
// more.
func (s *rabbitStore) scan(f Filter, act func(amqp.Delivery, Letter) (bool, error)) error {
	var unacked uint64 // the last delivery tag not acked
	err := func() error {
		now := time.Now()
		for n := 0; ; n++ {
			d, ok, err := s.ch.Get(s.queue, false)
			if err != nil {
				return fmt.Errorf("read the poison queue %q: %w", s.queue, err)
			}
			if !ok {
				return nil
			}
			if n == f.max() {
				unacked = d.DeliveryTag
				return maxError{max: n, queue: true}
			}
			l := letterOf(d)
			if !f.match(l, now) {
				unacked = d.DeliveryTag
				continue
			}
			acked, err := act(d, l)
			if !acked {
				unacked = d.DeliveryTag
			}
			if err != nil {
				return err
			}
		}
	}()
	if errors.Is(err, errStop) {
		err = nil
	}
	if unacked > 0 {
		if nerr := s.ch.Nack(unacked, true, true); nerr != nil && err == nil {
			err = fmt.Errorf("requeue the poison queue's messages: %w (they return when the connection closes)", nerr)
		}
	}
	return err
}

func (s *rabbitStore) List(_ context.Context, f Filter, visit func(Letter) bool) error {
	return s.scan(f, func(_ amqp.Delivery, l Letter) (bool, error) {
		if !visit(l) {
			return false, errStop
		}
		return false, nil
	})
}

func (s *rabbitStore) Replay(ctx context.Context, f Filter, send func(context.Context, Letter) error) (int, error) {
	return s.ackMatching(f, func(l Letter) error { return send(ctx, l) })
}

func (s *rabbitStore) Purge(_ context.Context, f Filter) (int, error) {
	return s.ackMatching(f, nil)
}

// ackMatching acks each dead letter f selects as it reads it, after
// before (when given) returned nil for it; it stops at the first error.
// It returns how many it acked.
func (s *rabbitStore) ackMatching(f Filter, before func(Letter) error) (int, error) {
	n := 0
	err := s.scan(f, func(d amqp.Delivery, l Letter) (bool, error) {
		if before != nil {
			if err := before(l); err != nil {
				return false, err
			}
		}
		if err := s.ch.Ack(d.DeliveryTag, false); err != nil {
			if before != nil {
				err = fmt.Errorf("ack dead letter %s: %w (it was replayed and stays: a second replay sends it again)", l.ID, err)
			}
			return false, err
		}
		n++
		return true, nil
	})
	return n, err
}

func (s *rabbitStore) Close() error {
	return errors.Join(s.ch.Close(), s.t.Close())
}

// letterOf reads a poison queue's message: its ID and properties, and
// the poison metadata the runtime wrote as headers.
func letterOf(d amqp.Delivery) Letter {
	md := map[string]string{}
	for k, v := range d.Headers {
		switch v := v.(type) {
		case string:
			md[k] = v
		case int, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64, bool:
			md[k] = fmt.Sprint(v)
		}
	}
	for k, v := range map[string]string{ports.MetadataCorrelationID: d.CorrelationId, ports.MetadataEventType: d.Type, ports.MetadataContentType: d.ContentType} {
		if v != "" {
			md[k] = v
		}
	}
	id := d.MessageId
	if id == "" {
		id = md[rabbitmq.HeaderMessageUUID]
	}
	delete(md, rabbitmq.HeaderMessageUUID)
	last := parseTime(md[transport.MetadataPoisonedAt], d.Timestamp)
	attempts, err := strconv.Atoi(md[transport.MetadataDeliveryAttempt])
	if err != nil || attempts < 1 {
		attempts = 1
	}
	return Letter{ID: id, MessageID: id, Handler: md[middleware.PoisonedHandlerKey], Topic: md[middleware.PoisonedTopicKey],
		Transport: md[middleware.PoisonedSubscriberKey], Reason: md[middleware.ReasonForPoisonedKey], Attempts: attempts,
		First: parseTime(md[transport.MetadataFirstPoisonedAt], last), Last: last, Size: len(d.Body), Metadata: md, Payload: d.Body}
}

func parseTime(s string, otherwise time.Time) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t
	}
	return otherwise
}
