package transport

import (
	"context"
	"runtime"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Offer hands a message out only to a consumer waiting for it, in a free
// slot, while intake is on; otherwise it changes nothing: no slot taken,
// nothing counted, settle never called.
func TestOffer(t *testing.T) {
	tests := []struct {
		name    string
		slots   int
		waiting bool // a consumer waits on the output channel
		held    int  // slots taken before the offer
		stop    bool // intake stopped before the offer
		want    bool
	}{
		{"consumer waiting", 2, true, 0, false, true},
		{"nobody waiting", 2, false, 0, false, false},
		{"no free slot", 1, true, 1, false, false},
		{"intake stopped", 2, true, 0, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subscribe, stop := context.WithCancel(SettledByConsumer(context.Background()))
			defer stop()
			var settled []bool
			h := NewHandout(subscribe, tt.slots, func(_ int, acked bool) { settled = append(settled, acked) })
			for range tt.held {
				h.Acquire()
			}
			if tt.stop {
				stop()
				<-h.Stopped()
			}
			got := make(chan *message.Message, 1)
			if tt.waiting && !tt.stop {
				go func() { got <- <-h.Output() }()
			}
			msg := message.NewMessage("1", nil)
			ok := offerUntil(h, msg, tt.want)
			if ok != tt.want {
				t.Fatalf("Offer = %v, want %v", ok, tt.want)
			}
			if ok {
				if m := <-got; m != msg {
					t.Fatal("the consumer got another message")
				}
				SettlerFrom(msg.Context()).Settle(true)
			}
			h.mu.Lock()
			n := h.n
			h.mu.Unlock()
			if n != 0 || len(h.slots) != tt.held {
				t.Fatalf("after the offer: %d counted, %d slots taken; want 0 and %d", n, len(h.slots), tt.held)
			}
			for range tt.held {
				h.Release()
			}
			h.Close()
			if want := map[bool]int{true: 1}[ok]; len(settled) != want {
				t.Fatalf("settled %v; want %d settle", settled, want)
			}
		})
	}
}

// offerUntil offers msg; where the offer should succeed it offers again
// until the consumer's goroutine waits on the channel (which the test
// cannot observe otherwise), a bounded number of times.
func offerUntil(h *Handout[int], msg *message.Message, retry bool) bool {
	for range 1_000_000 {
		if h.Offer(msg, 1) {
			return true
		}
		if !retry {
			return false
		}
		runtime.Gosched()
	}
	return false
}
