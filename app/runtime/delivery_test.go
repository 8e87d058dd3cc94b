package runtime

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// afterFuncCtx is a message context that, like the transport's, is not
// one of the context package's and takes AfterFunc registrations.
type afterFuncCtx struct {
	done       chan struct{}
	registered atomic.Int32
	mu         sync.Mutex
	afters     []func()
}

func (c *afterFuncCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *afterFuncCtx) Done() <-chan struct{}       { return c.done }
func (c *afterFuncCtx) Value(any) any               { return nil }
func (c *afterFuncCtx) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

func (c *afterFuncCtx) AfterFunc(f func()) func() bool {
	c.registered.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.afters = append(c.afters, f)
	return func() bool { return false }
}

func (c *afterFuncCtx) cancel() {
	close(c.done)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.afters {
		go f()
	}
}

// A context derived from a message's delivery registers with the
// message's own context (no goroutine per derived context) and ends when
// it ends.
func TestDeliveryContextPropagatesThroughAfterFunc(t *testing.T) {
	msgCtx := &afterFuncCtx{done: make(chan struct{})}
	d := &delivery{Context: msgCtx, handler: "h"}
	child, stop := context.WithTimeout(d, time.Hour)
	defer stop()
	if n := msgCtx.registered.Load(); n != 1 {
		t.Fatalf("the derived context registered %d AfterFuncs with the message's context, want 1", n)
	}
	if deliveryOf(child) != d {
		t.Fatal("the derived context does not carry the delivery")
	}
	msgCtx.cancel()
	select {
	case <-child.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the derived context did not end with the message's")
	}
}
