package runtime

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
)

// inflight counts the messages being handled, so that stop can wait for
// them. Its zero value is ready to use. The count is an atomic: every
// handler goroutine changes it twice per message, and a mutex there is
// the runtime's most contended lock; only a stop that waits takes one.
type inflight struct {
	n       atomic.Int64
	waiters atomic.Int32 // stops waiting for idle
	mu      sync.Mutex
	idle    chan struct{} // made by wait, closed by the add that reaches 0
}

// middleware counts a message in flight until it is settled, and settles
// it: ack when the chain returned nil, nack otherwise; through the
// message's transport.Settler when its subscriber gave it one, else Ack and
// Nack. Settling before leaving the count means stop never closes a
// subscriber between the two, which would hand a handled message back to
// the broker.
func (f *inflight) middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		f.add(1)
		defer f.add(-1)
		settler := transport.SettlerFrom(msg.Context())
		produced, err := h(msg)
		switch {
		case settler != nil:
			settler.Settle(err == nil)
		case err != nil:
			msg.Nack()
		default:
			msg.Ack()
		}
		return produced, err
	}
}

func (f *inflight) add(d int) {
	// A waiter registers before it reads the count, and add reads the
	// waiters after it changed the count: one of the two sees the other.
	if f.n.Add(int64(d)) == 0 && f.waiters.Load() > 0 {
		f.mu.Lock()
		if f.idle != nil {
			close(f.idle)
			f.idle = nil
		}
		f.mu.Unlock()
	}
}

func (f *inflight) count() int { return int(f.n.Load()) }

// wait returns true once nothing is in flight, false when ctx ends first.
func (f *inflight) wait(ctx context.Context) bool {
	f.mu.Lock()
	if f.idle == nil {
		f.idle = make(chan struct{})
	}
	idle := f.idle
	f.mu.Unlock()
	f.waiters.Add(1)
	defer f.waiters.Add(-1)
	if f.n.Load() == 0 {
		return true
	}
	select {
	case <-idle:
		return true
	case <-ctx.Done():
		return false
	}
}
