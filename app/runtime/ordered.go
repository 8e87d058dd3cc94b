package runtime

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// ordered runs one handler's subscription in order by key (binding
// order_by): a dispatcher goroutine takes the messages from the
// subscriber's channel and hands them to the binding's workers so that
// the messages of one key are handled one at a time, in arrival order,
// while different keys run in parallel. A message whose key is busy (its
// predecessor is being handled or retried) waits; a retrying message
// holds its worker and its key, not the others.
//
// Memory is bounded: at most maxWaiting messages wait in total (for their
// key or for a worker) and maxPerKey behind one key. At either bound the
// dispatcher stops taking from the channel (the subscriber's slots, and
// then the broker, hold the rest); nothing is dropped.
//
// A message without a key (an attribute of the template is missing) is
// handled unordered and counted (unkeyed).
//
// The workers run the chain as the unordered consumer's do: it settles
// each message, with the transport's own rules (MQTT acks in arrival
// order). Waiting messages are not settled until they run; at stop (intake
// ends) the running ones finish, the waiting ones are handed back (nack)
// once the subscriber closed its channel, and the dispatcher returns when
// both are done.
type ordered struct {
	msgs    <-chan *message.Message
	handle  message.HandlerFunc
	keyOf   func(*message.Message) (string, bool)
	intake  context.Context // ends at stop
	workers int
	// maxWaiting bounds the messages taken and not yet handed to a worker;
	// maxPerKey those waiting behind one key's running message.
	maxWaiting, maxPerKey int
	unkeyed               prometheus.Counter // nil: no registry
	// handedBack is told how many waiting messages stop handed back.
	handedBack func(n int)
	// ended is called once the dispatcher and every worker returned.
	ended func()
}

// job is a message on its way through the dispatcher.
type job struct {
	msg   *message.Message
	key   string
	keyed bool
	seq   uint64 // arrival order
}

// keyQueue is the state of a busy key: one of its messages is ready or
// running, and these wait behind it, oldest first.
type keyQueue struct {
	waiting []job
}

// run starts the dispatcher and the workers and returns; wg counts them.
func (o *ordered) run(wg *sync.WaitGroup) {
	work := make(chan job)
	done := make(chan job, o.workers) // a worker never blocks on it
	var workers sync.WaitGroup
	workers.Add(o.workers)
	wg.Add(o.workers + 1)
	for range o.workers {
		go func() {
			defer wg.Done()
			defer workers.Done()
			for j := range work {
				_, _ = o.handle(j.msg) // the chain settles msg and logs errors
				done <- j
			}
		}()
	}
	go func() {
		defer wg.Done()
		o.dispatch(work, done)
		close(work)
		workers.Wait()
		o.ended()
	}()
}

// dispatch is the dispatcher's loop. It returns once the subscriber closed
// its channel and no worker runs a message.
//
// At stop (intake ends) it hands nothing more to the workers but keeps
// reading the channel until the subscriber closes it, and only then hands
// every message it holds back, the newest first: a subscriber puts back
// what it had not handed out yet when its intake ended, and those are
// newer than all the dispatcher holds.
func (o *ordered) dispatch(work chan<- job, done <-chan job) {
	d := dispatcher{o: o, keys: map[string]*keyQueue{}}
	msgs, intake := o.msgs, o.intake.Done()
	for msgs != nil || d.running > 0 {
		var in <-chan *message.Message
		if msgs != nil && (d.stopping || d.pending == nil && d.waiting < o.maxWaiting) {
			in = msgs
		}
		var out chan<- job
		var next job
		if len(d.ready) > 0 && !d.stopping {
			out, next = work, d.ready[0]
		}
		select {
		case msg, ok := <-in:
			switch {
			case !ok:
				msgs = nil
				d.stopping = true
				d.handBackAll()
			case d.stopping:
				d.seq++
				d.late = append(d.late, job{msg: msg, seq: d.seq})
			default:
				d.take(msg)
			}
		case out <- next:
			d.ready[0] = job{}
			d.ready = d.ready[1:]
			d.waiting--
			d.running++
		case j := <-done:
			d.running--
			d.finished(j)
		case <-intake:
			intake = nil
			d.stopping = true
		}
	}
}

// dispatcher is the state of the dispatcher's loop, owned by its
// goroutine.
type dispatcher struct {
	o        *ordered
	keys     map[string]*keyQueue // the busy keys
	free     []*keyQueue          // idle key queues, for reuse
	ready    []job                // free to run, in arrival order
	pending  *job                 // taken, but its key's queue is full: intake pauses
	waiting  int                  // taken, not handed to a worker (ready, queued, pending)
	running  int                  // handed to a worker, not done
	seq      uint64               // messages taken
	late     []job                // taken after intake ended
	stopping bool                 // intake ended: nothing more to the workers
}

// take places a message the subscriber handed out.
func (d *dispatcher) take(msg *message.Message) {
	d.seq++
	j := job{msg: msg, seq: d.seq}
	j.key, j.keyed = d.o.keyOf(msg)
	d.waiting++
	if !j.keyed {
		if d.o.unkeyed != nil {
			d.o.unkeyed.Inc()
		}
		d.ready = append(d.ready, j)
		return
	}
	q, busy := d.keys[j.key]
	switch {
	case !busy:
		d.keys[j.key] = d.queue()
		d.ready = append(d.ready, j)
	case len(q.waiting) >= d.o.maxPerKey:
		d.pending = &j
	default:
		q.waiting = append(q.waiting, j)
	}
}

// finished frees j's key, or readies the next message of it.
func (d *dispatcher) finished(j job) {
	if !j.keyed || d.stopping {
		return
	}
	q := d.keys[j.key]
	if len(q.waiting) == 0 {
		delete(d.keys, j.key)
		d.free = append(d.free, q)
		return
	}
	d.ready = append(d.ready, q.waiting[0])
	q.waiting[0] = job{}
	q.waiting = q.waiting[1:]
	if p := d.pending; p != nil && p.key == j.key {
		q.waiting = append(q.waiting, *p)
		d.pending = nil
	}
}

func (d *dispatcher) queue() *keyQueue {
	if n := len(d.free); n > 0 {
		q := d.free[n-1]
		d.free = d.free[:n-1]
		q.waiting = q.waiting[:0]
		return q
	}
	return &keyQueue{}
}

// handBackAll hands every message the dispatcher holds back to its
// broker, the newest first: a broker that puts a handed-back message at
// the front of its queue (the memory transport) then has them in arrival
// order again; RabbitMQ puts each back at its place, and MQTT redelivers
// what was not acked in its order.
func (d *dispatcher) handBackAll() {
	back := append(slices.Clone(d.ready), d.late...)
	for _, q := range d.keys {
		back = append(back, q.waiting...)
	}
	if d.pending != nil {
		back = append(back, *d.pending)
	}
	slices.SortFunc(back, func(a, b job) int { return cmp.Compare(b.seq, a.seq) })
	for _, j := range back {
		handBack(j.msg)
	}
	d.ready, d.late, d.keys, d.pending, d.waiting = nil, nil, nil, nil, 0
	if len(back) > 0 {
		d.o.handedBack(len(back))
	}
}

// handBack settles a message that was never handled as not acked: its
// broker redelivers it.
func handBack(msg *message.Message) {
	if s := transport.SettlerFrom(msg.Context()); s != nil {
		s.Settle(false)
		return
	}
	msg.Nack()
}

// orderKeyOf renders a message's key from its attributes as the handler
// would see them: the topic_params segments of the topic it arrived on,
// else its metadata.
func orderKeyOf(key *config.OrderKey, params *config.TopicParams, bindingTopic string) func(*message.Message) (string, bool) {
	return func(msg *message.Message) (string, bool) {
		var segments map[string]string
		matched := false
		return key.Render(func(name string) (string, bool) {
			if params != nil && !matched {
				topic := msg.Metadata.Get(ports.MetadataTopic)
				if topic == "" {
					topic = bindingTopic
				}
				segments, matched = params.Match(topic), true
			}
			if v, ok := segments[name]; ok {
				return v, true
			}
			v, ok := msg.Metadata[name]
			return v, ok
		})
	}
}

// subscriberSlots is how many messages a binding's subscriber may have
// unsettled: its concurrency, and for an ordered binding also the
// messages that may wait for their key, so that the dispatcher is fed
// up to its bound.
func subscriberSlots(b config.Binding) int {
	if !b.Ordered() {
		return b.Concurrency
	}
	total, _ := b.OrderBounds()
	return b.Concurrency + total
}

// unkeyedCounter is the handler's series of
// <service>_messages_without_order_key_total.
func unkeyedCounter(registry *prometheus.Registry, namespace, handler string) (prometheus.Counter, error) {
	c, err := register(registry, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "messages_without_order_key_total",
		Help:      "Messages of an ordered binding (order_by) that lacked an attribute of the key and were handled unordered",
	}, []string{"handler_name"}))
	if err != nil {
		return nil, err
	}
	return c.WithLabelValues(handler), nil
}

// consumeOrdered starts the ordered consumer of an order_by binding.
func (r *Runtime) consumeOrdered(name string, b config.Binding, params *config.TopicParams, msgs <-chan *message.Message, handle message.HandlerFunc) error {
	key, err := config.ParseOrderKey(b.OrderBy, b.TopicParams)
	if err != nil {
		return r.cfg.FieldError("handlers."+name+".order_by", err.Error())
	}
	total, perKey := b.OrderBounds()
	o := &ordered{
		msgs: msgs, handle: handle, keyOf: orderKeyOf(key, params, b.Topic), intake: r.intake,
		workers: b.Concurrency, maxWaiting: total, maxPerKey: perKey,
		handedBack: func(n int) {
			r.logger.Info("messages waiting for their key handed back to the broker", "handler", name, "messages", n)
		},
		ended: func() { r.consumerEnded(name) },
	}
	if r.registry != nil {
		if o.unkeyed, err = unkeyedCounter(r.registry, r.cfg.Namespace(), name); err != nil {
			return err
		}
	}
	o.run(&r.consumers)
	return nil
}
