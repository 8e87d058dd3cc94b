package app

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

func (w *workers) running() int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.n
}

func TestWorkersReuseGoroutines(t *testing.T) {
	w := newWorkers()
	errHandler := errors.New("handler error")
	h := w.middleware(func(msg *message.Message) ([]*message.Message, error) {
		if msg.UUID == "bad" {
			return nil, errHandler
		}
		return []*message.Message{msg}, nil
	})
	for i := range 100 {
		msg := message.NewMessage("good", nil)
		produced, err := h(msg)
		if err != nil || len(produced) != 1 || produced[0] != msg {
			t.Fatalf("message %d: got %v, %v; want the handler's result", i, produced, err)
		}
	}
	if _, err := h(message.NewMessage("bad", nil)); !errors.Is(err, errHandler) {
		t.Fatalf("got %v, want the handler's error", err)
	}
	if n := w.running(); n != 1 {
		t.Fatalf("%d workers after 101 messages one at a time, want 1", n)
	}
	if err := w.close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// No message waits for another message's handler: as many workers start
// as handlers block at once.
func TestWorkersNeverQueue(t *testing.T) {
	const concurrent = 32
	w := newWorkers()
	var started sync.WaitGroup
	started.Add(concurrent)
	release := make(chan struct{})
	h := w.middleware(func(*message.Message) ([]*message.Message, error) {
		started.Done()
		<-release
		return nil, nil
	})
	var done sync.WaitGroup
	for range concurrent {
		done.Add(1)
		go func() {
			defer done.Done()
			if _, err := h(message.NewMessage("m", nil)); err != nil {
				t.Error(err)
			}
		}()
	}
	started.Wait() // every handler runs at once, or this blocks
	if n := w.running(); n != concurrent {
		t.Fatalf("%d workers for %d blocked handlers", n, concurrent)
	}

	// close waits for busy workers, bounded by its context.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := w.close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("close with busy workers: got %v, want the context's error", err)
	}
	close(release)
	done.Wait()
	if err := w.close(context.Background()); err != nil {
		t.Fatalf("close once the handlers returned: %v", err)
	}
	if n := w.running(); n != 0 {
		t.Fatalf("%d workers after close", n)
	}

	// After close a message runs on the caller's goroutine.
	ran := false
	h2 := w.middleware(func(*message.Message) ([]*message.Message, error) {
		ran = true
		return nil, nil
	})
	if _, err := h2(message.NewMessage("late", nil)); err != nil || !ran {
		t.Fatalf("after close: ran %v, err %v", ran, err)
	}
}
