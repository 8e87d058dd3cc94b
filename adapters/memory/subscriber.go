package memory

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
)

// SubscriberConfig configures one subscriber: its consumer group ("" is a
// group like any other) and at most Concurrency unsettled messages per
// subscription. The memory transport takes no Options.
type SubscriberConfig = transport.SubscriberConfig

// Subscriber consumes from the broker's queues for one consumer group.
//
// A message is settled through the transport.Settler in its context; Ack
// and Nack are bridged onto it unless the Subscribe context is
// transport.SettledByConsumer (transport.Handout keeps the books). A nack
// puts the message back at the front of its queue. Cancelling a Subscribe
// context stops intake: the output channel closes, and messages already
// delivered may still be settled. Close puts every unsettled message back
// at the front of its queue (an ack given before Close counts) and ends
// the message contexts.
type Subscriber struct {
	broker      *Transport
	group       string
	concurrency int

	subs transport.Subscriptions[*message.Message]
}

var _ message.Subscriber = (*Subscriber)(nil)

// Subscriber returns a subscriber (a *Subscriber) for one binding.
func (b *Transport) Subscriber(sc SubscriberConfig) (message.Subscriber, error) {
	if err := b.cfg.CheckBindingOptions(true, sc.Options); err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	return &Subscriber{broker: b, group: sc.Group, concurrency: sc.Concurrency}, nil
}

// Subscribe implements message.Subscriber.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.broker.mu.Lock()
	q := s.broker.queue(topic, s.group)
	s.broker.mu.Unlock()
	h := transport.NewHandout(ctx, s.concurrency, func(msg *message.Message, acked bool) {
		if !acked {
			s.broker.requeue(q, msg.Copy())
		}
	})
	if !s.subs.Add(h) || !h.Go(func() { s.consume(h, q) }) {
		return nil, ErrClosed
	}
	return h.Output(), nil
}

// consume hands the messages of q out until intake stops.
func (s *Subscriber) consume(h *transport.Handout[*message.Message], q *queue) {
	for h.Acquire() {
		msg := s.next(h, q)
		if msg == nil {
			h.Release()
			return
		}
		if !h.Send(msg, msg) {
			s.broker.requeue(q, msg.Copy())
			return
		}
	}
}

// next waits for a message; nil when intake stops first.
func (s *Subscriber) next(h *transport.Handout[*message.Message], q *queue) *message.Message {
	for {
		msg, changed := s.broker.take(q)
		if msg != nil {
			return msg
		}
		select {
		case <-changed:
		case <-h.Stopped():
			return nil
		}
	}
}

// Close stops every subscription, puts unsettled messages back and waits
// for the subscriber's goroutines. It is safe to call more than once.
func (s *Subscriber) Close() error {
	s.subs.Close()
	return nil
}
