package app

import (
	"context"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// workers runs handlers on long-lived goroutines. watermill's router starts
// a goroutine per message; its stack starts small, and a handler that
// decodes JSON grows it, copying it several times, on every message (a
// tenth of the service's CPU in the end-to-end benchmark). A worker keeps
// the stack it grew.
//
// The router's goroutine hands the message to an idle worker and waits for
// the result, so every message still has the router's goroutine, timing
// and settling; only the work moves. When no worker is idle a new one
// starts: there are never more workers than messages handled at once (the
// sum of the bindings' concurrency), and no message waits for another
// message's handler.
type workers struct {
	idle chan *job     // idle workers take jobs from here
	quit chan struct{} // closed by close: idle workers end

	mu     sync.RWMutex
	closed bool
	n      int           // running workers
	ended  chan struct{} // closed once closed and n == 0
}

type job struct {
	h        message.HandlerFunc
	msg      *message.Message
	produced []*message.Message
	err      error
	done     chan struct{}
}

var jobs = sync.Pool{New: func() any { return &job{done: make(chan struct{}, 1)} }}

func newWorkers() *workers {
	return &workers{idle: make(chan *job), quit: make(chan struct{}), ended: make(chan struct{})}
}

// middleware runs the rest of the chain on a worker.
func (w *workers) middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		j := jobs.Get().(*job)
		j.h, j.msg = h, msg
		if !w.hand(j) {
			j.run() // closed: run it here, as the router would
		}
		<-j.done
		produced, err := j.produced, j.err
		*j = job{done: j.done}
		jobs.Put(j)
		return produced, err
	}
}

// hand gives j to an idle worker or a new one; false once closed.
func (w *workers) hand(j *job) bool {
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return false
	}
	select {
	case w.idle <- j:
		w.mu.RUnlock()
		return true
	default:
	}
	w.mu.RUnlock()

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.n++
	go w.work(j)
	return true
}

func (w *workers) work(j *job) {
	defer w.exit()
	for {
		j.run()
		select {
		case j = <-w.idle:
		case <-w.quit:
			return
		}
	}
}

func (w *workers) exit() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n--
	if w.closed && w.n == 0 {
		close(w.ended)
	}
}

func (j *job) run() {
	j.produced, j.err = j.h(j.msg)
	j.done <- struct{}{}
}

// close ends the workers once they finished their messages and waits for
// them, or until ctx ends. Messages handed afterwards run on the router's
// goroutine.
func (w *workers) close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.quit)
		if w.n == 0 {
			close(w.ended)
		}
	}
	w.mu.Unlock()
	select {
	case <-w.ended:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
