package transport

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Handout hands the messages of one subscription to its consumer, and is
// the only bookkeeping a subscriber needs for them: at most slots
// unsettled at once, a context per message that carries its Settler, each
// message settled exactly once on the wire, and a Close that waits for
// what is out. What stays in the adapter is the wire: receive, convert,
// and the settle function (ack, or hand back for redelivery).
//
// An adapter's intake loop goes:
//
//	for h.Acquire() {           // a free slot, or intake stopped
//		m := receive()          // or h.Release() when intake stops first
//		if !h.Send(msg, token) {
//			// not handed out (intake stopped): hand it back the wire's way
//		}
//	}
//
// run on a goroutine of the Handout's (Go), and its Close closes its
// Subscriptions, which hand back what is unsettled.
//
// Intake stops when the Subscribe context ends or at Close: Acquire and
// Send return false, Stopped is closed, and the output channel closes once
// no Send is under way. Messages already handed out can still be settled
// until Close.
//
// The invariants, which every subscriber gets from here and transporttest
// checks on each: a message is counted and tracked before it is sent (its
// consumer may settle it the moment it has it), never after it is
// settled; it is settled once, whoever settles first (the consumer
// through the Settler, the consumer's Ack or Nack when bridged, or
// Close); its context ends when it is settled.
type Handout[T any] struct {
	settle func(token T, acked bool)
	bridge bool // Ack and Nack are awaited and bridged onto the Settler
	slots  chan struct{}
	out    chan *message.Message

	intake    chan struct{} // closed when intake stops
	outClosed chan struct{} // closed once out is closed
	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	owned     sync.WaitGroup // the intake watcher and the Ack bridges
	senders   sync.WaitGroup // Sends under way

	mu      sync.Mutex
	closed  bool          // Close has begun: Go refuses
	stopped bool          // intake stopped: Send refuses
	n       int           // counted (handed out or being sent) and not settled
	idle    chan struct{} // closed when n drops to 0
	// unsettled is what Close hands back: each delivery sits at its own
	// index, and free holds the indexes not in use, so that tracking a
	// message costs no hashing and, once the table has grown to the slots
	// in use, no allocation.
	unsettled []*delivery[T]
	free      []int
}

// NewHandout returns the Handout of one subscription: subscribe is the
// context given to Subscribe (its end stops intake; SettledByConsumer on
// it means Ack and Nack are not bridged), slots the most messages
// unsettled at once (below 1 means 1), and settle the wire: it acks the
// message token stands for (acked), or hands it back for redelivery. It
// is called once per message handed out, never for one that Send did not
// hand out.
func NewHandout[T any](subscribe context.Context, slots int, settle func(token T, acked bool)) *Handout[T] {
	h := &Handout[T]{
		settle:    settle,
		bridge:    !IsSettledByConsumer(subscribe),
		slots:     make(chan struct{}, max(slots, 1)),
		out:       make(chan *message.Message),
		intake:    make(chan struct{}),
		outClosed: make(chan struct{}),
		closing:   make(chan struct{}),
	}
	h.owned.Add(1)
	go func() {
		defer h.owned.Done()
		select {
		case <-subscribe.Done():
		case <-h.closing:
		}
		h.stopIntake()
	}()
	return h
}

// Go runs f, an intake loop of the adapter's, on a goroutine Close waits
// for; f must return once intake stops. It returns false, running
// nothing, once Close has begun.
func (h *Handout[T]) Go(f func()) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.owned.Add(1)
	go func() {
		defer h.owned.Done()
		f()
	}()
	return true
}

// Output is the channel Subscribe returns.
func (h *Handout[T]) Output() <-chan *message.Message { return h.out }

// Stopped is closed when intake stops: an adapter's own waits for the
// broker select on it.
func (h *Handout[T]) Stopped() <-chan struct{} { return h.intake }

// Acquire waits for a free slot; false once intake has stopped. The slot
// is freed when the message is settled, when Send does not hand it out,
// or by Release.
func (h *Handout[T]) Acquire() bool {
	select {
	case h.slots <- struct{}{}:
		return true
	case <-h.intake:
		return false
	}
}

// Release frees a slot that Acquire took and no message used.
func (h *Handout[T]) Release() { <-h.slots }

// Send hands msg out, in a slot Acquire took, with a context of its own
// that carries its Settler; token is what the wire needs to settle it.
// It returns true once the consumer has msg, false when intake stopped
// first: then msg was not handed out, its slot is free, and the adapter
// hands it back its own way (settle is not called).
func (h *Handout[T]) Send(msg *message.Message, token T) bool {
	return h.send(msg, token, true)
}

// Offer hands msg out at once or not at all: only when a slot is free and
// the consumer is waiting for a message now. It returns false, having
// changed nothing (no slot taken, nothing counted, settle not called),
// when either is not so or intake stopped. An adapter whose intake loop
// serves several subscriptions offers a message first and queues it for
// the subscription's own loop (Acquire, Send) only when the offer fails:
// a consumer that waits gets it without a goroutine in between.
func (h *Handout[T]) Offer(msg *message.Message, token T) bool {
	select {
	case h.slots <- struct{}{}:
		return h.send(msg, token, false)
	default:
		return false
	}
}

// send hands msg out in a slot taken: when wait, until the consumer takes
// it or intake stops; else only if the consumer takes it now.
func (h *Handout[T]) send(msg *message.Message, token T, wait bool) bool {
	d := &delivery[T]{h: h, msg: msg, token: token}
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		<-h.slots
		return false
	}
	h.senders.Add(1)
	// Counted and tracked before it is sent: its consumer may settle it
	// the moment it has it.
	h.n++
	h.track(d)
	h.mu.Unlock()
	defer h.senders.Done()
	msg.SetContext(d)
	var sent bool
	if wait {
		select {
		case h.out <- msg:
			sent = true
		case <-h.intake:
		}
	} else {
		select {
		case h.out <- msg:
			sent = true
		default:
		}
	}
	if !sent {
		if d.done.CompareAndSwap(false, true) {
			d.end()
			<-h.slots
			h.untrack(d)
		}
		return false
	}
	if h.bridge {
		h.owned.Add(1)
		go func() {
			defer h.owned.Done()
			awaitAck(msg, d, d.Done())
		}()
	}
	return true
}

// WaitSettled returns once every message handed out is settled: a
// subscriber whose wire must stay open for the settles (an AMQP channel)
// waits here after intake stopped. Close settles what is left, so it
// returns then at the latest.
func (h *Handout[T]) WaitSettled() {
	for {
		h.mu.Lock()
		if h.n == 0 {
			h.mu.Unlock()
			return
		}
		if h.idle == nil {
			h.idle = make(chan struct{})
		}
		idle := h.idle
		h.mu.Unlock()
		<-idle
	}
}

// Close stops intake, hands back every message still unsettled (settle
// with false; an ack given with Ack before Close counts as an ack), which
// ends their contexts, and returns once every settle under way has
// returned and every goroutine of the Handout has ended. It is safe to
// call more than once and from several goroutines.
func (h *Handout[T]) Close() {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		close(h.closing)
	})
	<-h.outClosed // no Send is under way any more
	h.mu.Lock()
	back := make([]*delivery[T], 0, h.n)
	for _, d := range h.unsettled {
		if d != nil {
			back = append(back, d)
		}
	}
	h.mu.Unlock()
	for _, d := range back {
		d.Settle(h.bridge && acked(d.msg))
	}
	h.WaitSettled() // the settles under way reach their wire first
	h.owned.Wait()
}

// stopIntake refuses further Sends and closes the output channel once the
// Sends under way returned.
func (h *Handout[T]) stopIntake() {
	h.mu.Lock()
	h.stopped = true
	close(h.intake)
	h.mu.Unlock()
	h.senders.Wait()
	close(h.out)
	close(h.outClosed)
}

// track records d among the unsettled. h.mu must be held.
func (h *Handout[T]) track(d *delivery[T]) {
	if k := len(h.free); k > 0 {
		d.index = h.free[k-1]
		h.free = h.free[:k-1]
		h.unsettled[d.index] = d
		return
	}
	d.index = len(h.unsettled)
	h.unsettled = append(h.unsettled, d)
}

// untrack forgets a settled (or unsent) delivery.
func (h *Handout[T]) untrack(d *delivery[T]) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unsettled[d.index] = nil
	h.free = append(h.free, d.index)
	h.n--
	if h.n < 0 {
		panic("transport: a message was settled that its Handout never counted")
	}
	if h.n == 0 && h.idle != nil {
		close(h.idle)
		h.idle = nil
	}
}

// delivery is a message handed out, until it is settled. It is the
// message's context too: it carries the Settler (itself) and ends when
// the message is settled, which spares a message the two allocations of
// a cancellable context. Its channel is made only when someone asks for
// Done, and children derived from it (context.WithCancel and friends)
// register through AfterFunc, without a goroutine.
type delivery[T any] struct {
	h     *Handout[T]
	msg   *message.Message
	token T
	index int         // in h.unsettled
	done  atomic.Bool // settled: the first Settle won

	mu     sync.Mutex
	ended  bool
	ch     chan struct{} // made by Done
	afters map[*func()]struct{}
}

var _ context.Context = (*delivery[struct{}])(nil)

// Deadline implements context.Context: none.
func (d *delivery[T]) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done implements context.Context: closed when the message is settled.
func (d *delivery[T]) Done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil {
		d.ch = make(chan struct{})
		if d.ended {
			close(d.ch)
		}
	}
	return d.ch
}

// Err implements context.Context: context.Canceled once settled.
func (d *delivery[T]) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ended {
		return context.Canceled
	}
	return nil
}

// Value implements context.Context: the delivery is the Settler of its
// message, and carries nothing else.
func (d *delivery[T]) Value(key any) any {
	if key == (settlerKey{}) {
		return d
	}
	return nil
}

// AfterFunc runs f once the message is settled (at once, on a goroutine
// of its own, when it already is); stop unregisters f and reports whether
// it did so before f ran. The context package uses it to propagate the
// end to derived contexts instead of a goroutine per derived context.
func (d *delivery[T]) AfterFunc(f func()) (stop func() bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ended {
		go f()
		return func() bool { return false }
	}
	if d.afters == nil {
		d.afters = map[*func()]struct{}{}
	}
	key := &f
	d.afters[key] = struct{}{}
	return func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		_, ok := d.afters[key]
		delete(d.afters, key)
		return ok
	}
}

// end ends the context: Done closes, Err reports context.Canceled, and
// the functions given to AfterFunc run.
func (d *delivery[T]) end() {
	d.mu.Lock()
	if d.ended {
		d.mu.Unlock()
		return
	}
	d.ended = true
	if d.ch != nil {
		close(d.ch)
	}
	afters := d.afters
	d.afters = nil
	d.mu.Unlock()
	for f := range afters {
		go (*f)()
	}
}

// Settle implements Settler: only the first call counts.
func (d *delivery[T]) Settle(acked bool) {
	if d.done.Swap(true) {
		return
	}
	d.end()
	d.h.settle(d.token, acked)
	<-d.h.slots
	d.h.untrack(d)
}

// Subscriptions are the Handouts of one subscriber (or transport), closed
// together. The zero value is ready to use.
type Subscriptions[T any] struct {
	mu       sync.Mutex
	closed   bool
	handouts []*Handout[T]
}

// Add registers h; once Close has begun it closes h and returns false.
func (s *Subscriptions[T]) Add(h *Handout[T]) bool {
	s.mu.Lock()
	if !s.closed {
		s.handouts = append(s.handouts, h)
		s.mu.Unlock()
		return true
	}
	s.mu.Unlock()
	h.Close()
	return false
}

// Close closes every Handout (each hands back what it has unsettled and
// waits for its goroutines); Add refuses from then on. It is safe to call
// more than once.
func (s *Subscriptions[T]) Close() {
	s.mu.Lock()
	s.closed = true
	handouts := s.handouts
	s.handouts = nil
	s.mu.Unlock()
	for _, h := range handouts {
		h.Close()
	}
}
