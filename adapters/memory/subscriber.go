package memory

import (
	"context"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
)

// SubscriberConfig configures one subscriber: its consumer group ("" is a
// group like any other) and at most Concurrency unsettled messages per
// subscription. The memory transport takes no Options.
type SubscriberConfig = transport.SubscriberConfig

// Subscriber consumes from the broker's queues for one consumer group.
//
// Cancelling a Subscribe context stops intake: the output channel closes,
// and messages already delivered may still be acked or nacked. Close puts
// every unsettled message back at the front of its queue.
type Subscriber struct {
	broker      *Transport
	group       string
	concurrency int

	// base is the parent of every message context; Close cancels it.
	base       context.Context
	cancelBase context.CancelFunc
	closing    chan struct{}
	closeOnce  sync.Once
	wg         sync.WaitGroup // consume loops and hand-offs
}

var _ message.Subscriber = (*Subscriber)(nil)

// Subscriber returns a subscriber (a *Subscriber) for one binding.
func (b *Transport) Subscriber(sc SubscriberConfig) (message.Subscriber, error) {
	if err := b.cfg.CheckBindingOptions(true, sc.Options); err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	base, cancel := context.WithCancel(context.Background())
	return &Subscriber{
		broker: b, group: sc.Group, concurrency: max(sc.Concurrency, 1),
		base: base, cancelBase: cancel, closing: make(chan struct{}),
	}, nil
}

// Subscribe implements message.Subscriber.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	select {
	case <-s.closing:
		return nil, ErrClosed
	default:
	}
	s.broker.mu.Lock()
	q := s.broker.queue(topic, s.group)
	s.broker.mu.Unlock()

	out := make(chan *message.Message)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		s.consume(ctx, q, out)
	}()
	return out, nil
}

func (s *Subscriber) consume(ctx context.Context, q *queue, out chan<- *message.Message) {
	slots := make(chan struct{}, s.concurrency)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		}
		msg := s.next(ctx, q)
		if msg == nil {
			return
		}
		msgCtx, cancel := context.WithCancel(s.base)
		msg.SetContext(msgCtx)
		select {
		case out <- msg:
		case <-ctx.Done():
			cancel()
			s.broker.requeue(q, msg.Copy())
			return
		case <-s.closing:
			cancel()
			s.broker.requeue(q, msg.Copy())
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-slots }()
			defer cancel()
			s.settle(q, msg)
		}()
	}
}

// next waits for a message; nil when intake stops first.
func (s *Subscriber) next(ctx context.Context, q *queue) *message.Message {
	for {
		msg, changed := s.broker.take(q)
		if msg != nil {
			return msg
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-s.closing:
			return nil
		}
	}
}

// settle waits for the handler's verdict; a nack, or no verdict before
// Close, puts the message back.
func (s *Subscriber) settle(q *queue, msg *message.Message) {
	select {
	case <-msg.Acked():
		return
	case <-msg.Nacked():
	case <-s.closing:
		select {
		case <-msg.Acked(): // acked just as we closed: keep the ack
			return
		default:
		}
	}
	s.broker.requeue(q, msg.Copy())
}

// Close stops every subscription, puts unsettled messages back and waits
// for the subscriber's goroutines. It is safe to call more than once.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.cancelBase()
	})
	s.wg.Wait()
	return nil
}
