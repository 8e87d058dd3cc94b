package runtime

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// The consumer's goroutines grow as handlers hold them, up to the limit
// and never past it, and it ends once, after its channel closes and every
// handler returned.
func TestConsumerGrowsToItsLimit(t *testing.T) {
	for _, limit := range []int{1, 3, 16} {
		msgs := make(chan *message.Message)
		release := make(chan struct{})
		var running, most atomic.Int32
		var ended atomic.Int32
		var wg sync.WaitGroup
		c := &consumer{
			msgs: msgs,
			handle: func(*message.Message) ([]*message.Message, error) {
				now := running.Add(1)
				defer running.Add(-1)
				for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
				}
				<-release
				return nil, nil
			},
			ended: func() { ended.Add(1) },
		}
		c.run(limit, &wg)
		// Each send returns once a goroutine took the message: the first
		// limit sends find one waiting although every earlier message is
		// still held.
		for range limit {
			select {
			case msgs <- message.NewMessage("m", nil):
			case <-time.After(10 * time.Second):
				t.Fatalf("limit %d: %d goroutines took messages, want %d", limit, most.Load(), limit)
			}
		}
		// One more is not taken while all are held.
		select {
		case msgs <- message.NewMessage("m", nil):
			t.Fatalf("limit %d: a message was taken past the limit", limit)
		case <-time.After(50 * time.Millisecond):
		}
		close(release)
		close(msgs)
		wg.Wait()
		if got := c.started.Load(); got != int32(limit) {
			t.Errorf("limit %d: %d goroutines started", limit, got)
		}
		if n := ended.Load(); n != 1 {
			t.Errorf("limit %d: ended called %d times, want 1", limit, n)
		}
	}
}
