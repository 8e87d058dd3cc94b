package runtime

import (
	"testing"
	"time"

	"github.com/hexmill/hexmill/app/config"
)

// The hand-back table forgets the oldest message counted past
// handbackEntries, and a forgotten or acked message starts again at 1.
func TestHandbacksBounded(t *testing.T) {
	h := newHandbacks()
	key := func(i int) [16]byte { return [16]byte{byte(i), byte(i >> 8), byte(i >> 16)} }
	for i := range handbackEntries + 10 {
		if n := h.add(key(i)); n != 1 {
			t.Fatalf("first hand-back of %d counted %d", i, n)
		}
	}
	if len(h.counts) != handbackEntries || h.size.Load() != handbackEntries {
		t.Fatalf("%d messages counted (size %d), want at most %d", len(h.counts), h.size.Load(), handbackEntries)
	}
	if n := h.add(key(0)); n != 1 {
		t.Fatalf("the oldest, forgotten, counted %d, want 1", n)
	}
	if n := h.add(key(handbackEntries + 9)); n != 2 {
		t.Fatalf("the newest counted %d, want 2", n)
	}
}

func TestHandbackDelay(t *testing.T) {
	cfg := config.RetryConfig{InitialInterval: 100 * time.Millisecond, MaxInterval: time.Second, Multiplier: 2}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 50: time.Second} {
		if got := handbackDelay(cfg, n); got != want {
			t.Errorf("handbackDelay(%d) = %s, want %s", n, got, want)
		}
	}
}
