package rabbitmq

import "testing"

// A call takes a channel no other call is using while there is one, the
// least used when there is none, and the first one when calls come one
// at a time (so that a publisher opens only as many channels as it has
// calls at once).
func TestPickSpreadsCallsOverIdleChannels(t *testing.T) {
	p := &Publisher{}
	for range 4 {
		p.slots = append(p.slots, &pubSlot{p: p})
	}
	index := func(s *pubSlot) int {
		for i, x := range p.slots {
			if x == s {
				return i
			}
		}
		return -1
	}
	for range 3 { // one call at a time
		s := p.pick()
		if i := index(s); i != 0 {
			t.Fatalf("a call alone took channel %d, want 0", i)
		}
		s.calls.Add(-1)
	}
	var held []*pubSlot
	for want := range 4 { // calls at once: each its own channel
		s := p.pick()
		if i := index(s); i != want {
			t.Fatalf("call %d took channel %d, want %d, the first idle one", want+1, i, want)
		}
		held = append(held, s)
	}
	held[2].calls.Add(-1) // the third call ends
	if i := index(p.pick()); i != 2 {
		t.Fatalf("a call took channel %d, want 2, the only idle one", i)
	}
	p.slots[0].calls.Add(2) // channel 0 busier than the others
	if i := index(p.pick()); i != 1 {
		t.Fatalf("with none idle a call took channel %d, want 1, the first of the least used", i)
	}
	for i, s := range p.slots {
		if want := []int32{3, 2, 1, 1}[i]; s.calls.Load() != want {
			t.Fatalf("channel %d counts %d calls, want %d", i, s.calls.Load(), want)
		}
	}
}
