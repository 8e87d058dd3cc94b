package runtime

import (
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
)

// consumer runs one handler's subscription: as many long-lived goroutines
// as the binding's concurrency take messages from the subscriber's channel
// and run the middleware chain on each, which settles it.
//
// It replaces watermill's router, which passes every message through a
// goroutine that adds the router's context values, then starts a goroutine
// per message: three goroutine hand-offs and a fresh stack, grown and
// copied by the JSON decoder, per message. The middleware keep watermill's
// signature (message.HandlerMiddleware), so watermill's own, such as
// Recoverer, run in the chain.
type consumer struct {
	msgs   <-chan *message.Message
	handle message.HandlerFunc
	// ended is called once every goroutine returned, which they do when
	// the subscriber closes its channel.
	ended func()
}

// run starts n goroutines and returns; wg counts them.
func (c *consumer) run(n int, wg *sync.WaitGroup) {
	var left atomic.Int32
	left.Store(int32(n))
	wg.Add(n)
	for range n {
		go func() {
			defer wg.Done()
			for msg := range c.msgs {
				_, _ = c.handle(msg) // the chain settles msg and logs errors
			}
			if left.Add(-1) == 0 {
				c.ended()
			}
		}()
	}
}
