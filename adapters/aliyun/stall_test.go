package aliyun

import (
	"context"
	"testing"
	"time"
)

// The stall timer expires a wait that lasts, and only that one.
func TestStallTimer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newStallTimer(ctx, 20*time.Millisecond)
	defer s.stop()
	for range 100 { // waits that end in time leave the context alive
		w := s.arm()
		s.disarm()
		if w.Err() != nil || s.fired() {
			t.Fatal("a wait that ended in time expired")
		}
	}
	w := s.arm()
	select {
	case <-w.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a wait past the stall timeout did not expire")
	}
	s.disarm()
	if !s.fired() {
		t.Fatal("fired() is false after the timer expired")
	}
	if w2 := s.arm(); w2.Err() != nil || s.fired() {
		t.Fatal("the wait after an expiry starts expired")
	}
	s.disarm()
	cancel()
	if w3 := s.arm(); w3.Err() == nil {
		t.Fatal("a wait outlives the serve context")
	}
	s.disarm()
}

// What the link's wait for a message costs per message, against a context
// with a timeout per wait.
func BenchmarkStallWait(b *testing.B) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.Run("stallTimer", func(b *testing.B) {
		s := newStallTimer(parent, 2*time.Second)
		defer s.stop()
		b.ReportAllocs()
		for b.Loop() {
			_ = s.arm().Done() // go-amqp's Receive selects on Done
			s.disarm()
		}
	})
	b.Run("WithTimeout", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(parent, 2*time.Second)
			_ = ctx.Done()
			cancel()
		}
	})
}
