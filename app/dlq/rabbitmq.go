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

// rabbitStore is a RabbitMQ poison queue. Every command reads the whole
// queue with basic.get on one channel, settles what it selected (ack
// after a confirmed republish, or for a purge) and requeues the rest
// (nack with requeue) before it returns; a crash requeues every
// unsettled message with the connection. The queue is held in memory
// meanwhile.
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

// held is a message a command read from the queue.
type held struct {
	d       amqp.Delivery
	letter  Letter
	settled bool // acked
}

// readAll gets every ready message of the queue, unacked.
func (s *rabbitStore) readAll() ([]*held, error) {
	var out []*held
	for {
		d, ok, err := s.ch.Get(s.queue, false)
		if err != nil {
			return out, fmt.Errorf("read the poison queue %q: %w", s.queue, err)
		}
		if !ok {
			return out, nil
		}
		out = append(out, &held{d: d, letter: letterOf(d)})
	}
}

// requeue gives back every message still unsettled on the channel: one
// nack with multiple set, up to the last message not acked.
func (s *rabbitStore) requeue(h []*held) error {
	i := len(h) - 1
	for i >= 0 && h[i].settled {
		i--
	}
	if i < 0 {
		return nil
	}
	if err := s.ch.Nack(h[i].d.DeliveryTag, true, true); err != nil {
		return fmt.Errorf("requeue the poison queue's messages: %w (they return when the connection closes)", err)
	}
	return nil
}

func (s *rabbitStore) List(_ context.Context, f Filter) ([]Letter, error) {
	h, err := s.readAll()
	if rerr := s.requeue(h); err == nil {
		err = rerr
	}
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var out []Letter
	for _, m := range h {
		if f.match(m.letter, now) {
			out = append(out, m.letter)
		}
	}
	return out, nil
}

func (s *rabbitStore) Replay(ctx context.Context, f Filter, send func(context.Context, Letter) error) (int, error) {
	return s.ackMatching(f, func(l Letter) error { return send(ctx, l) })
}

func (s *rabbitStore) Purge(_ context.Context, f Filter) (int, error) {
	return s.ackMatching(f, nil)
}

// ackMatching reads the poison queue, acks each dead letter f matches,
// after before (when given) returned nil for it, and requeues the rest;
// it stops at the first error. It returns how many it acked.
func (s *rabbitStore) ackMatching(f Filter, before func(Letter) error) (int, error) {
	h, err := s.readAll()
	n := 0
	if err == nil {
		now := time.Now()
		for _, m := range h {
			if !f.match(m.letter, now) {
				continue
			}
			if before != nil {
				if err = before(m.letter); err != nil {
					break
				}
			}
			if err = s.ch.Ack(m.d.DeliveryTag, false); err != nil {
				if before != nil {
					err = fmt.Errorf("ack dead letter %s: %w (it was replayed and stays: a second replay sends it again)", m.letter.ID, err)
				}
				break
			}
			m.settled = true
			n++
		}
	}
	if rerr := s.requeue(h); err == nil {
		err = rerr
	}
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
