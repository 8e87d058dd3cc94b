package runtime

import (
	"context"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
)

// inflight counts the messages being handled, so that stop can wait for
// them. Its zero value is ready to use.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed while n == 0; nil means closed
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
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 && d > 0 {
		f.idle = make(chan struct{})
	}
	f.n += d
	if f.n == 0 {
		close(f.idle)
	}
}

func (f *inflight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// wait returns true once nothing is in flight, false when ctx ends first.
func (f *inflight) wait(ctx context.Context) bool {
	f.mu.Lock()
	idle := f.idle
	n := f.n
	f.mu.Unlock()
	if n == 0 {
		return true
	}
	select {
	case <-idle:
		return true
	case <-ctx.Done():
		return false
	}
}
