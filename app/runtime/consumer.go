package runtime

import (
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
)

// consumer runs one handler's subscription: long-lived goroutines, at most
// the binding's concurrency, take messages from the subscriber's channel
// and run the middleware chain on each, which settles it.
//
// It replaces watermill's router, which passes every message through a
// goroutine that adds the router's context values, then starts a goroutine
// per message: three goroutine hand-offs and a fresh stack, grown and
// copied by the JSON decoder, per message. The middleware keep watermill's
// signature (message.HandlerMiddleware), so watermill's own, such as
// Recoverer, run in the chain.
//
// The goroutines are started as they are needed: one at first, and
// another whenever a goroutine takes a message and leaves none waiting.
// So there is always one waiting while fewer than the limit run, and a
// handler that keeps up runs on a few goroutines instead of passing each
// message to the next of many parked ones (a wake-up and a cold stack per
// message).
type consumer struct {
	msgs   <-chan *message.Message
	handle message.HandlerFunc
	// ended is called once every goroutine returned, which they do when
	// the subscriber closes its channel.
	ended func()

	limit   int32
	wg      *sync.WaitGroup
	started atomic.Int32 // goroutines started, never more than limit
	running atomic.Int32 // goroutines started and not returned
	waiting atomic.Int32 // goroutines waiting for a message
}

// run starts the first goroutine of at most n and returns; wg counts them.
func (c *consumer) run(n int, wg *sync.WaitGroup) {
	c.limit = int32(max(n, 1))
	c.wg = wg
	c.spawn()
}

// spawn starts a goroutine unless limit have been started. It is called
// by run and by a running goroutine, so running does not reach 0 (and
// ended is not called) while a spawn is under way.
func (c *consumer) spawn() {
	for {
		k := c.started.Load()
		if k >= c.limit {
			return
		}
		if c.started.CompareAndSwap(k, k+1) {
			break
		}
	}
	c.running.Add(1)
	c.wg.Add(1)
	go c.work()
}

func (c *consumer) work() {
	defer c.wg.Done()
	for {
		c.waiting.Add(1)
		msg, ok := <-c.msgs
		left := c.waiting.Add(-1)
		if !ok {
			break
		}
		if left == 0 {
			c.spawn()
		}
		_, _ = c.handle(msg) // the chain settles msg and logs errors
	}
	if c.running.Add(-1) == 0 {
		c.ended()
	}
}
