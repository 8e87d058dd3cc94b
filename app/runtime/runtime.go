// Package runtime runs a service's handlers on their transports: a
// consumer per handler, each message through the middleware chain (its
// order in links, chain.go), the publishers of the event bindings and the
// poison target (with the outbox when PostgreSQL is on), and the stop
// protocol that loses no message. It needs no fx: Params are filled from
// the fx graph by package app, or by hand (app/apptest does).
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// Runtime runs the handlers on their transports and stops them without
// losing a message. It is the consumers (one per handler), the publishers
// and the stop protocol; the fx module wraps it, and it works without fx
// too.
//
// Stop follows the protocol: stop intake; wait for in-flight handlers,
// bounded by the drain timeout; hand unfinished messages back to their
// brokers; relay what the outbox holds (PostgreSQL on); close publishers;
// close connections.
type Runtime struct {
	cfg      config.Config
	logger   *slog.Logger
	openers  map[string]Opener
	handlers []ports.Handler
	bindings map[string]config.Binding // by handler name
	formats  map[string]Format
	extra    []Middleware
	registry *prometheus.Registry
	db       *postgres.DB // nil: PostgreSQL off

	transports  map[string]transport.Transport
	publisher   *Publisher
	publishers  *eventPublisher
	subscribers []message.Subscriber
	consumers   sync.WaitGroup // the consumers' goroutines
	inflight    inflight
	metrics     *handlerMetrics // nil without a registry
	relay       *postgres.Relay // nil without a DB or without event bindings
	// Delayed retries (delayed.go): each handler's parker, the store's
	// poller and the chains it delivers to.
	parkers      map[string]*parker
	delayStore   *postgres.DelayStore // nil: no binding parks in it
	delayHandles map[string]message.HandlerFunc

	tracerProvider trace.TracerProvider     // nil: tracing off
	ownTracer      *sdktrace.TracerProvider // made from the config; shut down at stop
	tracing        *tracing                 // nil: tracing off

	intake       context.Context // the subscriptions'; cancelled at stop
	cancelIntake context.CancelFunc
	abort        context.Context // cancelled when the drain timeout expires
	cancelAbort  context.CancelFunc

	mu      sync.Mutex
	state   runtimeState
	stopErr error
	ended   []string // handlers whose subscription ended before stop
}

type runtimeState int

const (
	stateNew runtimeState = iota
	stateRunning
	stateStopping
	stateStopped
)

// Params are what a Runtime is built from. The fx module fills them from
// the graph (the tags name its value groups); without fx, fill them by
// hand.
type Params struct {
	fx.In
	Config     config.Config
	Logger     *slog.Logger    `optional:"true"`
	Transports []Opener        `group:"transports"`
	Handlers   []ports.Handler `group:"handlers"`
	// Formats are the wire-format translations bindings may name, besides
	// "" and "json".
	Formats []NamedFormat `group:"formats"`
	// Middlewares run in every handler's chain (see Middleware).
	Middlewares []Middleware `group:"middlewares"`
	// Registry receives the handlers' and publishers' metrics; nil for
	// none.
	Registry *prometheus.Registry `optional:"true"`
	// Publisher is the one the handlers were given; nil for a new one.
	Publisher *Publisher `optional:"true"`
	// TracerProvider makes the spans; nil for the one the configuration's
	// tracing section describes (none when it is off). Stop flushes it.
	// Tests supply one with an in-memory exporter.
	TracerProvider trace.TracerProvider `optional:"true"`
	// DB is the service's database, nil when PostgreSQL is off. With it,
	// idempotent bindings run their handlers in a transaction, events
	// published in a transaction go through the outbox, its relay is part
	// of the stop protocol and readiness pings the database. The caller
	// owns it: it migrates it before Start (postgres.FrameworkComponent
	// first) and closes it after Stop. In the fx graph it is built before
	// the runtime, so its start hook (migrations) runs before the
	// runtime's and its stop hook (retention, close) after the runtime's
	// stop protocol.
	DB *postgres.DB `optional:"true"`
}

// New checks that every handler is bound and every binding has its
// handler and transport; it connects nothing.
func New(p Params) (*Runtime, error) {
	formats := map[string]Format{}
	for _, f := range p.Formats {
		formats[f.Name] = f.Format
	}
	r := &Runtime{
		cfg: p.Config, logger: p.Logger, handlers: p.Handlers, formats: formats, extra: p.Middlewares,
		registry: p.Registry, openers: map[string]Opener{}, transports: map[string]transport.Transport{},
		publisher: p.Publisher, bindings: map[string]config.Binding{}, tracerProvider: p.TracerProvider, db: p.DB,
	}
	if r.publisher == nil {
		r.publisher = NewPublisher()
	}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	for _, o := range p.Transports {
		r.openers[o.Name] = o
	}
	names := map[string]bool{}
	keys := map[string]string{} // binding key by handler name
	for _, h := range p.Handlers {
		name := h.Name()
		if names[name] {
			return nil, fmt.Errorf("handler %q is registered twice", name)
		}
		names[name] = true
		key, ok := config.BindingKey(r.cfg.Handlers, name)
		if !ok {
			if c := config.Closest(name, slices.Sorted(maps.Keys(r.cfg.Handlers))); c != "" {
				return nil, r.cfg.FieldError("handlers."+name, fmt.Sprintf("the handler is registered but not bound; did you mean handlers.%s for handlers.%s?", name, c))
			}
			return nil, r.cfg.FieldError("handlers."+name, "the handler is registered but not bound; set handlers."+name+".transport and .topic in the configuration file, or "+
				r.cfg.EnvName("handlers."+name+".transport")+" and "+r.cfg.EnvName("handlers."+name+".topic"))
		}
		keys[name] = key
		b := r.cfg.Handlers[key]
		r.bindings[name] = b
		if _, ok := r.openers[b.Transport]; !ok {
			return nil, r.cfg.FieldError("handlers."+key+".transport", fmt.Sprintf("transport %q is not part of this build", b.Transport))
		}
		if _, err := r.format(b.Format); err != nil {
			return nil, r.cfg.FieldError("handlers."+key+".format", err.Error())
		}
		if err := r.cfg.CheckIdempotent(key, r.db != nil); err != nil {
			return nil, err
		}
	}
	bound := map[string]bool{}
	for _, k := range keys {
		bound[k] = true
	}
	for _, key := range slices.Sorted(maps.Keys(r.cfg.Handlers)) {
		if !bound[key] {
			fix := "no handler has this name; remove the binding or register the handler (app.AsHandler)"
			if c := config.Closest(key, slices.Sorted(maps.Keys(names))); c != "" {
				fix = fmt.Sprintf("no handler has this name; did you mean %s? (handlers: %s)", c, strings.Join(slices.Sorted(maps.Keys(names)), ", "))
			}
			return nil, r.cfg.FieldError("handlers."+key, fix)
		}
	}
	for _, t := range r.cfg.UsedTransports() {
		if _, ok := r.openers[t]; !ok {
			return nil, r.cfg.FieldError("transports."+t, "this transport is not part of this build")
		}
	}
	if err := r.checkEvents(p.Handlers); err != nil {
		return nil, err
	}
	return r, nil
}

// checkEvents compares the event types the handlers declare
// (ports.Emitter) with the events.* bindings: a declared type must be
// bound, and a binding that is a near miss of a declared type is a typo.
// When every handler declares, a binding no handler publishes is refused
// too.
func (r *Runtime) checkEvents(handlers []ports.Handler) error {
	declared := map[string]string{} // event type -> the first handler declaring it
	all := true
	for _, h := range handlers {
		e, ok := h.(ports.Emitter)
		if !ok || e.Emits() == nil {
			all = false
			continue
		}
		for _, t := range e.Emits() {
			if _, ok := declared[t]; !ok {
				declared[t] = h.Name()
			}
		}
	}
	bound := slices.Sorted(maps.Keys(r.cfg.Events))
	for _, t := range slices.Sorted(maps.Keys(declared)) {
		if _, ok := config.BindingKey(r.cfg.Events, t); ok {
			continue
		}
		fix := fmt.Sprintf("handler %s publishes %s, which has no binding; set events.%s.transport and .topic in the configuration file, or %s and %s",
			declared[t], t, t, r.cfg.EnvName("events."+t+".transport"), r.cfg.EnvName("events."+t+".topic"))
		if c := config.Closest(t, bound); c != "" {
			fix = fmt.Sprintf("handler %s publishes %s, which has no binding; did you mean events.%s for events.%s?", declared[t], t, t, c)
		}
		return r.cfg.FieldError("events."+t, fix)
	}
	types := slices.Sorted(maps.Keys(declared))
	for _, key := range bound {
		if _, ok := config.BindingKey(declared, key); ok {
			continue
		}
		if c := config.Closest(key, types); c != "" {
			return r.cfg.FieldError("events."+key, fmt.Sprintf("no handler publishes %s; did you mean %s? (published: %s)", key, c, strings.Join(types, ", ")))
		}
		if all && len(handlers) > 0 {
			return r.cfg.FieldError("events."+key, fmt.Sprintf("no handler publishes %s; remove the binding (published: %s)", key, strings.Join(types, ", ")))
		}
	}
	return nil
}

// Start connects the transports the bindings use, declares their topology,
// starts every subscription and returns once all of them consume.
func (r *Runtime) Start(ctx context.Context) (err error) {
	r.mu.Lock()
	if r.state != stateNew {
		r.mu.Unlock()
		return errors.New("runtime: started twice")
	}
	r.state = stateRunning
	r.mu.Unlock()
	defer func() {
		if err != nil {
			r.closeAll(context.Background())
			r.mu.Lock()
			r.state = stateStopped
			r.mu.Unlock()
		}
	}()

	for _, w := range r.cfg.Warnings() {
		r.logger.Warn("insecure setting: "+w.Setting, "risk", w.Risk)
	}
	if r.tracerProvider == nil {
		if r.ownTracer, err = newTracerProvider(ctx, r.cfg); err != nil {
			return err
		}
		if r.ownTracer != nil {
			r.tracerProvider = r.ownTracer
		}
	}
	r.tracing = newTracing(r.tracerProvider, r.cfg.Tracing.Incoming)

	for _, name := range r.cfg.UsedTransports() {
		t, err := r.openers[name].Open(ctx)
		if err != nil {
			return fmt.Errorf("open transport %s: %w", name, err)
		}
		r.transports[name] = t
		if c, ok := t.(prometheus.Collector); ok && r.registry != nil {
			reg := prometheus.WrapRegistererWith(prometheus.Labels{"transport": name}, prometheus.WrapRegistererWithPrefix(r.cfg.Namespace()+"_", r.registry))
			if err := reg.Register(c); err != nil && !errors.As(err, &prometheus.AlreadyRegisteredError{}) {
				return fmt.Errorf("transport %s: metrics: %w", name, err)
			}
		}
	}
	publishers, err := newEventPublisher(r.cfg, r.transports, r.registry, r.tracing, r.db)
	if err != nil {
		return err
	}
	r.publishers = publishers
	r.publisher.set(publishers)
	if err := r.checkTargets(ctx); err != nil {
		return err
	}
	if r.db != nil && len(publishers.routes) > 0 {
		// The relay publishes through the event bindings' own publishers,
		// now open; it stops before they close.
		rc := r.cfg.Postgres.Relay
		rc.Publishers = publishers.relayPublishers()
		if r.relay, err = postgres.NewRelay(r.db, rc, NewWatermillLogger(r.logger)); err != nil {
			return err
		}
		r.relay.Start()
	}

	if r.registry != nil {
		if r.metrics, err = newHandlerMetrics(r.registry, r.cfg.Namespace()); err != nil {
			return err
		}
		if err := r.registerDeadLetters(); err != nil {
			return err
		}
	}
	r.abort, r.cancelAbort = context.WithCancel(context.Background())
	// The in-flight middleware settles every message through its
	// subscriber's transport.Settler: no subscriber need wait on Ack and Nack.
	r.intake, r.cancelIntake = context.WithCancel(transport.SettledByConsumer(context.Background()))
	if err := r.setUpDelays(ctx); err != nil {
		return err
	}
	for _, h := range r.handlers {
		if err := r.consume(ctx, h); err != nil {
			return err
		}
	}
	r.startDelays()
	r.logger.Info("consuming", "handlers", len(r.handlers), "transports", r.cfg.UsedTransports())
	return nil
}

// checkTargets asks each event binding's transport whether what it
// publishes to exists.
func (r *Runtime) checkTargets(ctx context.Context) error {
	check := func(field string, e config.EventBinding) error {
		t, ok := r.transports[e.Transport].(transport.TargetChecker)
		if !ok {
			return nil
		}
		if err := t.CheckTarget(ctx, e.Topic, e.Options); err != nil {
			return fmt.Errorf("%s (topic %q on %s): %w", field, e.Topic, e.Transport, err)
		}
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(r.cfg.Events)) {
		if err := check("events."+name, r.cfg.Events[name]); err != nil {
			return err
		}
	}
	return check("poison", r.cfg.Poison)
}

// consume subscribes h's binding and starts its consumer, which runs
// each message through the handler's chain (see links for its order).
func (r *Runtime) consume(ctx context.Context, h ports.Handler) error {
	name := h.Name()
	b := r.bindings[name]
	maxBytes := maxMessageBytes(b, r.transports[b.Transport])
	sub, err := r.transports[b.Transport].Subscriber(transport.SubscriberConfig{Handler: name, Group: b.Group, Concurrency: subscriberSlots(b), Options: b.Options,
		MaxMessageBytes: maxBytes})
	if err != nil {
		return fmt.Errorf("handlers.%s: %w", name, err)
	}
	r.subscribers = append(r.subscribers, sub)
	format, _ := r.format(b.Format)
	params, _ := config.ParseTopicParams(b.TopicParams)

	handle := build(links(chainParams{
		handler:     name,
		binding:     b,
		tracing:     r.tracing,
		metrics:     r.metrics,
		inflight:    &r.inflight,
		abort:       r.abort,
		logger:      r.logger,
		retry:       r.cfg.Retry,
		publishers:  r.publishers,
		db:          r.db,
		middlewares: r.extra,
		maxBytes:    maxBytes,
		handbacks:   newHandbacks(),
		parker:      r.parkers[name],
	}), handlerFunc(h, b, format, params))
	if r.delayHandles != nil && r.parkers[name] != nil && r.parkers[name].native == nil {
		r.delayHandles[name] = handle
	}

	// Subscribe returns once the subscription consumes; the subscription
	// lives until stop cancels intake, not as long as ctx.
	subscribed := make(chan error, 1)
	var msgs <-chan *message.Message
	go func() {
		var err error
		msgs, err = sub.Subscribe(r.intake, b.Topic)
		subscribed <- err
	}()
	select {
	case err := <-subscribed:
		if err != nil {
			return fmt.Errorf("handlers.%s: subscribe %s: %w", name, b.Topic, err)
		}
	case <-ctx.Done():
		r.cancelIntake() // ends the Subscribe
		<-subscribed
		return fmt.Errorf("handlers.%s: subscribe %s: %w", name, b.Topic, ctx.Err())
	}
	if b.Ordered() {
		return r.consumeOrdered(name, b, params, msgs, handle)
	}
	c := &consumer{msgs: msgs, handle: handle, ended: func() { r.consumerEnded(name) }}
	c.run(b.Concurrency, &r.consumers)
	return nil
}

// consumerEnded notes a subscription that ended before stop: the service
// is no longer ready.
func (r *Runtime) consumerEnded(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == stateRunning {
		r.ended = append(r.ended, name)
		r.logger.Error("subscription ended; the service is not ready", "handler", name)
	}
}

func (r *Runtime) format(name string) (Format, error) {
	if name == "" || name == "json" {
		return nil, nil
	}
	if f, ok := r.formats[name]; ok {
		return f, nil
	}
	known := []string{"json"}
	known = append(known, slices.Sorted(maps.Keys(r.formats))...)
	return nil, fmt.Errorf("unknown format %q; use one of %v", name, known)
}

// Publisher is the publisher the runtime connects.
func (r *Runtime) Publisher() *Publisher { return r.publisher }

// Ready returns nil while every subscription consumes, every transport is
// connected, and no event binding (nor the poison target) has failed to
// publish for longer than publish_unready_after.
func (r *Runtime) Ready() error {
	if nr := r.NotReady(); len(nr) > 0 {
		return nr[0].Err
	}
	return nil
}

// readyTimeout bounds the database's round trip in Ready.
const readyTimeout = 2 * time.Second

// Stop runs the stop protocol. ctx bounds the whole stop; the drain itself
// is bounded by the configured drain timeout.
func (r *Runtime) Stop(ctx context.Context) error {
	r.mu.Lock()
	if r.state != stateRunning {
		err := r.stopErr
		r.mu.Unlock()
		return err
	}
	r.state = stateStopping
	r.mu.Unlock()

	// 1. Stop intake: subscriptions end, delivered messages stay settleable.
	r.logger.Info("stopping: intake stopped, draining", "in_flight", r.inflight.count(), "drain_timeout", r.cfg.DrainTimeout)
	r.cancelIntake()
	r.stopDelayIntake()

	// 2. Wait for in-flight handlers, bounded by the drain timeout.
	drainCtx, cancelDrain := context.WithTimeout(ctx, r.cfg.DrainTimeout)
	drained := r.inflight.wait(drainCtx)
	cancelDrain()
	if !drained {
		r.logger.Warn("drain timeout: handing unfinished messages back to the broker", "in_flight", r.inflight.count())
	}
	// Handlers still running are told to give up; their messages are
	// nacked, not poisoned.
	r.cancelAbort()

	err := r.closeAll(ctx)
	r.mu.Lock()
	r.state, r.stopErr = stateStopped, err
	r.mu.Unlock()
	r.logger.Info("stopped", "drained", drained)
	return err
}

// closeAll runs steps 3 to 6 of the stop protocol: subscribers settle what
// is unsettled (nack, release) and close their channels, the consumers
// end, the outbox relay publishes what the handlers committed and stops,
// then publishers and last the connections close.
func (r *Runtime) closeAll(ctx context.Context) error {
	for _, t := range r.transports { // ctx bounds their close paths too
		if s, ok := t.(transport.Stopper); ok {
			s.Stopping(ctx)
		}
	}
	if r.cancelIntake != nil {
		r.cancelIntake()
	}
	var errs []error
	for _, s := range r.subscribers {
		if err := s.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close subscriber: %w", err))
		}
	}
	if err := r.waitConsumers(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := r.stopDelays(ctx); err != nil {
		errs = append(errs, err)
	}
	// No handler writes to the outbox any more: relay what it holds
	// through the publishers, which are still open.
	if r.relay != nil {
		if err := r.relay.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	// Every handler has returned: its spans and its publishes' spans have
	// ended, and are exported before anything else closes.
	if err := r.flushTraces(ctx); err != nil {
		errs = append(errs, err)
	}
	if r.publishers != nil {
		r.publisher.set(nil)
		if err := r.publishers.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(r.transports)) {
		if err := r.transports[name].Close(); err != nil {
			errs = append(errs, fmt.Errorf("close transport %s: %w", name, err))
		}
	}
	if r.cancelAbort != nil {
		r.cancelAbort()
	}
	return errors.Join(errs...)
}

// waitConsumers waits until the consumers' goroutines returned: at once,
// once the subscribers closed their channels, unless a handler ignores
// that its context ended. Such a handler is given up on after another
// drain timeout, as watermill's router did; its message goes back to the
// broker with the connection.
func (r *Runtime) waitConsumers(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		r.consumers.Wait()
		close(done)
	}()
	grace := time.NewTimer(r.cfg.DrainTimeout)
	defer grace.Stop()
	select {
	case <-done:
		return nil
	case <-grace.C:
		return errors.New("handlers did not return after the drain timeout and their context ended")
	case <-ctx.Done():
		return fmt.Errorf("handlers did not return: %w", ctx.Err())
	}
}

// flusher is a tracer provider that can export what it holds.
type flusher interface {
	ForceFlush(context.Context) error
}

// flushTraces exports the spans still held; stop calls it after the drain
// and before connections close.
func (r *Runtime) flushTraces(ctx context.Context) error {
	if r.ownTracer != nil {
		if err := r.ownTracer.Shutdown(ctx); err != nil {
			return fmt.Errorf("tracing: export at stop: %w", err)
		}
		return nil
	}
	if f, ok := r.tracerProvider.(flusher); ok {
		if err := f.ForceFlush(ctx); err != nil {
			return fmt.Errorf("tracing: export at stop: %w", err)
		}
	}
	return nil
}
