package memory

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
)

// SubscriberConfig configures one subscriber: its consumer group ("" is a
// group like any other) and at most Concurrency unsettled messages per
// subscription. The memory transport takes no Options.
type SubscriberConfig = transport.SubscriberConfig

// Subscriber consumes from the broker's queues for one consumer group.
//
// A message is settled through the transport.Settler in its context; Ack and
// Nack are bridged onto it unless the Subscribe context is
// transport.SettledByConsumer. A nack puts the message back at the front of its
// queue. Cancelling a Subscribe context stops intake: the output channel
// closes, and messages already delivered may still be settled. Close puts
// every unsettled message back at the front of its queue (an ack given
// before Close counts) and ends the message contexts.
type Subscriber struct {
	broker      *Transport
	group       string
	concurrency int

	// base is the parent of every message context; Close cancels it.
	base       context.Context
	cancelBase context.CancelFunc
	closing    chan struct{}
	closeOnce  sync.Once
	wg         sync.WaitGroup // consume loops and Ack bridges

	mu        sync.Mutex
	closed    bool                   // Close took the unsettled messages
	unsettled map[*delivery]struct{} // handed out, not settled
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
		unsettled: map[*delivery]struct{}{},
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
	bridge := !transport.IsSettledByConsumer(ctx)
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
		d := &delivery{s: s, q: q, msg: msg, slots: slots, bridged: bridge}
		msgCtx, cancel := context.WithCancel(s.base)
		d.cancel = cancel
		msg.SetContext(transport.WithSettler(msgCtx, d))
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
		if !s.track(d) {
			d.Settle(bridge && transport.Acked(msg)) // Close has begun: hand it back
			continue
		}
		if bridge {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				transport.AwaitAck(msg, d, msgCtx.Done())
			}()
		}
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

// track registers d as unsettled; false once Close took the unsettled
// messages.
func (s *Subscriber) track(d *delivery) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if d.done.Load() {
		return true // settled as soon as it was handed out: nothing to track
	}
	s.unsettled[d] = struct{}{}
	return true
}

// delivery is a message handed out, until it is settled.
type delivery struct {
	s       *Subscriber
	q       *queue
	msg     *message.Message
	slots   chan struct{} // one taken for the message
	cancel  context.CancelFunc
	bridged bool // its Ack and Nack are awaited
	done    atomic.Bool
}

// Settle implements transport.Settler: a nack puts the message back at the
// front of its queue.
func (d *delivery) Settle(acked bool) {
	if d.done.Swap(true) {
		return
	}
	s := d.s
	s.mu.Lock()
	delete(s.unsettled, d)
	s.mu.Unlock()
	d.cancel()
	if !acked {
		s.broker.requeue(d.q, d.msg.Copy())
	}
	<-d.slots
}

// Close stops every subscription, puts unsettled messages back and waits
// for the subscriber's goroutines. It is safe to call more than once.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.mu.Lock()
		s.closed = true
		unsettled := s.unsettled
		s.unsettled = nil
		s.mu.Unlock()
		for d := range unsettled {
			d.Settle(d.bridged && transport.Acked(d.msg))
		}
		s.cancelBase()
	})
	s.wg.Wait()
	return nil
}
