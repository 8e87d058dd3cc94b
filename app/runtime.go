package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/adapters/transport"
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
	cfg      Config
	logger   *slog.Logger
	openers  map[string]Opener
	handlers []ports.Handler
	bindings map[string]Binding // by handler name
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

// RuntimeParams are what a Runtime is built from.
type RuntimeParams struct {
	Config     Config
	Logger     *slog.Logger
	Transports []Opener
	Handlers   []ports.Handler
	// Formats are the wire-format translations bindings may name, besides
	// "" and "json".
	Formats map[string]Format
	// Middlewares run in every handler's chain (see Middleware).
	Middlewares []Middleware
	// Registry receives the handlers' and publishers' metrics; nil for
	// none.
	Registry *prometheus.Registry
	// Publisher is the one the handlers were given; nil for a new one.
	Publisher *Publisher
	// TracerProvider makes the spans; nil for the one the configuration's
	// tracing section describes (none when it is off). Stop flushes it.
	TracerProvider trace.TracerProvider
	// DB is the service's database, nil when PostgreSQL is off. With it,
	// idempotent bindings run their handlers in a transaction, events
	// published in a transaction go through the outbox, its relay is part
	// of the stop protocol and readiness pings the database. The caller
	// owns it: it migrates it before Start (postgres.FrameworkComponent
	// first) and closes it after Stop.
	DB *postgres.DB
}

// NewRuntime checks that every handler is bound and every binding has its
// handler and transport; it connects nothing.
func NewRuntime(p RuntimeParams) (*Runtime, error) {
	r := &Runtime{
		cfg: p.Config, logger: p.Logger, handlers: p.Handlers, formats: p.Formats, extra: p.Middlewares,
		registry: p.Registry, openers: map[string]Opener{}, transports: map[string]transport.Transport{},
		publisher: p.Publisher, bindings: map[string]Binding{}, tracerProvider: p.TracerProvider, db: p.DB,
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
		key, ok := bindingKey(r.cfg.Handlers, name)
		if !ok {
			return nil, r.cfg.fieldError("handlers."+name, "the handler is registered but not bound; set handlers."+name+".transport and .topic in the configuration file, or "+
				r.cfg.EnvName("handlers."+name+".transport")+" and "+r.cfg.EnvName("handlers."+name+".topic"))
		}
		keys[name] = key
		b := r.cfg.Handlers[key]
		r.bindings[name] = b
		if _, ok := r.openers[b.Transport]; !ok {
			return nil, r.cfg.fieldError("handlers."+key+".transport", fmt.Sprintf("transport %q is not part of this build", b.Transport))
		}
		if _, err := r.format(b.Format); err != nil {
			return nil, r.cfg.fieldError("handlers."+key+".format", err.Error())
		}
		if b.Idempotent && r.db == nil {
			return nil, r.cfg.fieldError("handlers."+key+".idempotent", "needs PostgreSQL, which is off: set postgres.url or postgres.host, or set idempotent to false")
		}
	}
	bound := map[string]bool{}
	for _, k := range keys {
		bound[k] = true
	}
	for _, key := range sortedKeys(r.cfg.Handlers) {
		if !bound[key] {
			fix := "no handler has this name; remove the binding or register the handler (app.AsHandler)"
			if c := closest(key, sortedKeys(names)); c != "" {
				fix = fmt.Sprintf("no handler has this name; did you mean %s? (handlers: %s)", c, strings.Join(sortedKeys(names), ", "))
			}
			return nil, r.cfg.fieldError("handlers."+key, fix)
		}
	}
	for _, t := range r.cfg.usedTransports() {
		if _, ok := r.openers[t]; !ok {
			return nil, r.cfg.fieldError("transports."+t, "this transport is not part of this build")
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
	bound := sortedKeys(r.cfg.Events)
	for _, t := range sortedKeys(declared) {
		if _, ok := bindingKey(r.cfg.Events, t); ok {
			continue
		}
		fix := fmt.Sprintf("handler %s publishes %s, which has no binding; set events.%s.transport and .topic in the configuration file, or %s and %s",
			declared[t], t, t, r.cfg.EnvName("events."+t+".transport"), r.cfg.EnvName("events."+t+".topic"))
		if c := closest(t, bound); c != "" {
			fix = fmt.Sprintf("handler %s publishes %s, which has no binding; did you mean events.%s for events.%s?", declared[t], t, t, c)
		}
		return r.cfg.fieldError("events."+t, fix)
	}
	types := sortedKeys(declared)
	for _, key := range bound {
		if _, ok := bindingKey(declared, key); ok {
			continue
		}
		if c := closest(key, types); c != "" {
			return r.cfg.fieldError("events."+key, fmt.Sprintf("no handler publishes %s; did you mean %s? (published: %s)", key, c, strings.Join(types, ", ")))
		}
		if all && len(handlers) > 0 {
			return r.cfg.fieldError("events."+key, fmt.Sprintf("no handler publishes %s; remove the binding (published: %s)", key, strings.Join(types, ", ")))
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

	if r.tracerProvider == nil {
		if r.ownTracer, err = newTracerProvider(ctx, r.cfg); err != nil {
			return err
		}
		if r.ownTracer != nil {
			r.tracerProvider = r.ownTracer
		}
	}
	r.tracing = newTracing(r.tracerProvider)

	for _, name := range r.cfg.usedTransports() {
		t, err := r.openers[name].Open(ctx)
		if err != nil {
			return fmt.Errorf("open transport %s: %w", name, err)
		}
		r.transports[name] = t
		if c, ok := t.(prometheus.Collector); ok && r.registry != nil {
			reg := prometheus.WrapRegistererWith(prometheus.Labels{"transport": name}, prometheus.WrapRegistererWithPrefix(r.cfg.metricNamespace()+"_", r.registry))
			if err := reg.Register(c); err != nil && !errors.As(err, &prometheus.AlreadyRegisteredError{}) {
				return fmt.Errorf("transport %s: metrics: %w", name, err)
			}
		}
	}
	publishers, err := newEventPublisher(r.cfg, r.transports, r.registry, r.tracing, r.db != nil)
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
		if r.metrics, err = newHandlerMetrics(r.registry, r.cfg.metricNamespace()); err != nil {
			return err
		}
	}
	r.abort, r.cancelAbort = context.WithCancel(context.Background())
	// The in-flight middleware settles every message through its
	// subscriber's transport.Settler: no subscriber need wait on Ack and Nack.
	r.intake, r.cancelIntake = context.WithCancel(transport.SettledByConsumer(context.Background()))
	for _, h := range r.handlers {
		if err := r.consume(ctx, h); err != nil {
			return err
		}
	}
	r.logger.Info("consuming", "handlers", len(r.handlers), "transports", r.cfg.usedTransports())
	return nil
}

// checkTargets asks each event binding's transport whether what it
// publishes to exists.
func (r *Runtime) checkTargets(ctx context.Context) error {
	check := func(field string, e EventBinding) error {
		t, ok := r.transports[e.Transport].(transport.TargetChecker)
		if !ok {
			return nil
		}
		if err := t.CheckTarget(ctx, e.Topic, e.Options); err != nil {
			return fmt.Errorf("%s (topic %q on %s): %w", field, e.Topic, e.Transport, err)
		}
		return nil
	}
	for _, name := range sortedKeys(r.cfg.Events) {
		if err := check("events."+name, r.cfg.Events[name]); err != nil {
			return err
		}
	}
	return check("poison", r.cfg.Poison)
}

// consume subscribes h's binding and starts its consumer, with the
// middleware chain, outermost first: handler name, delivery span (tracing
// on), failure log, metrics, in-flight count and settling, handler span
// (tracing on), poison target, retry, the transaction of an idempotent
// binding (postgres.DedupMiddleware: each attempt its own transaction,
// which a duplicate ends before anything below runs), panic recovery
// (inside the transaction, so that a panic rolls it back), the service's
// middlewares (AsMiddleware: in the transaction, first deliveries only),
// the handler. The poison target is outside the transaction: a poisoned
// message is published directly, after the rollback.
func (r *Runtime) consume(ctx context.Context, h ports.Handler) error {
	name := h.Name()
	b := r.bindings[name]
	sub, err := r.transports[b.Transport].Subscriber(transport.SubscriberConfig{Handler: name, Group: b.Group, Concurrency: b.Concurrency, Options: b.Options})
	if err != nil {
		return fmt.Errorf("handlers.%s: %w", name, err)
	}
	r.subscribers = append(r.subscribers, sub)
	format, _ := r.format(b.Format)
	params, _ := parseTopicParams(b.TopicParams)

	chain := []message.HandlerMiddleware{named(name)}
	if b.MessageID == MessageIDContent {
		chain = append(chain, contentID(b.Topic))
	}
	if r.tracing != nil {
		chain = append(chain, r.tracing.consumer(b))
	}
	chain = append(chain, r.logFailure(name))
	if r.metrics != nil {
		chain = append(chain, r.metrics.middleware(name, b.Transport))
	}
	chain = append(chain, r.inflight.middleware)
	if r.tracing != nil {
		chain = append(chain, r.tracing.handler(name))
	}
	chain = append(chain,
		r.poison(name, b),
		retry{cfg: r.cfg.Retry, abort: r.abort, logger: r.logger}.middleware,
	)
	if b.Idempotent {
		chain = append(chain, postgres.DedupMiddleware(r.db, name))
	}
	chain = append(chain, middleware.Recoverer)
	for _, m := range r.extra {
		chain = append(chain, func(next message.HandlerFunc) message.HandlerFunc { return m(name, next) })
	}
	handle := r.handlerFunc(h, b, format, params)
	for i := len(chain) - 1; i >= 0; i-- {
		handle = chain[i](handle)
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
	c := &consumer{msgs: msgs, handle: handle, ended: func() { r.consumerEnded(name) }}
	c.run(b.Concurrency, &r.consumers)
	return nil
}

// logFailure logs a message handed back to its broker, except when stop
// cut its handler short.
func (r *Runtime) logFailure(name string) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			produced, err := h(msg)
			if err != nil && r.abort.Err() == nil {
				r.logger.ErrorContext(msg.Context(), "handler failed; the message goes back to its broker", "handler", name, "message_id", msg.UUID, "err", err)
			}
			return produced, err
		}
	}
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

// handlerFunc turns a ports.Handler into a watermill handler: it applies
// the binding's wire format and fills Metadata and the correlation ID.
func (r *Runtime) handlerFunc(h ports.Handler, b Binding, format Format, params *regexp.Regexp) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		in := msg
		if format != nil {
			in = msg.Copy() // the poison target gets the message as it came
			if err := format(in); err != nil {
				return nil, err
			}
		}
		topic := in.Metadata.Get(ports.MetadataTopic)
		if topic == "" {
			topic = b.Topic
		}
		correlationID := in.Metadata.Get(ports.MetadataCorrelationID)
		if correlationID == "" {
			correlationID = msg.UUID
		}
		attrs := make(map[string]string, len(in.Metadata)+2)
		for k, v := range in.Metadata {
			if err := checkUTF8(k, v); err != nil {
				return nil, ports.Invalid(err)
			}
			attrs[k] = v
		}
		for k, v := range topicParams(params, topic) {
			attrs[k] = v
		}
		// The message's context ends when its subscriber closes, which the
		// stop protocol does once the drain timeout expired.
		ctx := ports.WithCorrelationID(msg.Context(), correlationID)
		return nil, h.Handle(ctx, ports.Message{
			Metadata: ports.Metadata{
				ID: msg.UUID, CorrelationID: correlationID, Topic: topic,
				ReceivedAt: time.Now(), Attributes: attrs,
			},
			Payload: in.Payload,
		})
	}
}

// checkUTF8 refuses a metadata entry that is not valid UTF-8, so that it
// never reaches a handler, a log line or an MQTT publish (where the broker
// would close the connection). The correlation ID is exempt: MQTT carries
// it as binary correlation data.
func checkUTF8(k, v string) error {
	switch {
	case k == ports.MetadataCorrelationID:
	case !utf8.ValidString(k):
		return fmt.Errorf("metadata key %q is not valid UTF-8: the sender must send UTF-8 header and property names", k)
	case !utf8.ValidString(v):
		return fmt.Errorf("metadata %q: the value %q is not valid UTF-8: the sender must send UTF-8 header and property values", k, v)
	}
	return nil
}

func (r *Runtime) format(name string) (Format, error) {
	if name == "" || name == "json" {
		return nil, nil
	}
	if f, ok := r.formats[name]; ok {
		return f, nil
	}
	known := []string{"json"}
	known = append(known, sortedKeys(r.formats)...)
	return nil, fmt.Errorf("unknown format %q; use one of %v", name, known)
}

// Publisher is the publisher the runtime connects.
func (r *Runtime) Publisher() *Publisher { return r.publisher }

// Ready returns nil while every subscription consumes, every transport is
// connected, and no event binding (nor the poison target) has failed to
// publish for longer than publish_unready_after.
func (r *Runtime) Ready() error {
	r.mu.Lock()
	state, ended := r.state, r.ended
	r.mu.Unlock()
	if state != stateRunning {
		return errors.New("not consuming")
	}
	if len(ended) > 0 {
		return fmt.Errorf("not consuming: the subscription of %v ended", ended)
	}
	for _, name := range sortedKeys(r.transports) {
		if err := r.transports[name].Ready(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if r.db != nil {
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		err := r.db.Ready(ctx)
		cancel()
		if err != nil {
			return err
		}
	}
	if r.cfg.PublishUnreadyAfter > 0 && r.publishers != nil {
		return r.publishers.unready(r.cfg.PublishUnreadyAfter)
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
		if s, ok := t.(interface{ Stopping(context.Context) }); ok {
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
	for _, name := range sortedKeys(r.transports) {
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

// Publisher is the domain's ports.Publisher. It exists before the runtime
// starts (handlers are built with it) and publishes once the runtime has
// opened its transports; before that, and after stop, Publish returns an
// error.
type Publisher struct {
	mu    sync.RWMutex
	inner *eventPublisher
}

var _ ports.Publisher = (*Publisher)(nil)

// NewPublisher returns a publisher for NewRuntime to connect.
func NewPublisher() *Publisher { return &Publisher{} }

// Publish implements ports.Publisher.
func (p *Publisher) Publish(ctx context.Context, events ...ports.Event) error {
	p.mu.RLock()
	inner := p.inner
	p.mu.RUnlock()
	if inner == nil {
		return publishError{errors.New("publish: the service is not running")}
	}
	return inner.Publish(ctx, events...)
}

func (p *Publisher) set(inner *eventPublisher) {
	p.mu.Lock()
	p.inner = inner
	p.mu.Unlock()
}

// bindingKey finds the binding of a handler or an event type: by its
// name, else by the name without regard to case, "-" and "_" (a binding
// created from the environment is FLEET_HANDLERS_DEVICE_STATUS_... for
// device-status, FLEET_EVENTS_BATTERYLOW_... for BatteryLow).
func bindingKey[V any](bindings map[string]V, name string) (string, bool) {
	if _, ok := bindings[name]; ok {
		return name, true
	}
	for _, k := range sortedKeys(bindings) {
		if normalKey(k) == normalKey(name) {
			return k, true
		}
	}
	return "", false
}

// keySeparators drops the separators normalKey ignores. One replacer for
// all calls: the event publisher normalises every event's type, and a
// replacer builds its tables (some kilobytes) on first use.
var keySeparators = strings.NewReplacer("-", "", "_", "")

func normalKey(k string) string {
	return strings.ToLower(keySeparators.Replace(k))
}

// closest is the name among names nearest to s, if it is near enough to
// be a typo of it.
func closest(s string, names []string) string {
	best, bestD := "", -1
	for _, n := range names {
		if d := distance(normalKey(s), normalKey(n)); bestD < 0 || d < bestD {
			best, bestD = n, d
		}
	}
	if bestD < 0 || bestD > max(2, len(s)/3) {
		return ""
	}
	return best
}

// metricNamespace is the service's name (not the instance's service
// setting, so that dashboards do not depend on it) as a Prometheus
// namespace.
func (c Config) metricNamespace() string {
	name := c.name
	if name == "" {
		name = c.Service
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, name)
}

// contentID gives each message the hash of its topic and payload as its
// ID (Binding.MessageID content): a redelivery of a message its sender
// gave no ID then has the ID of its first delivery.
func contentID(bindingTopic string) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			topic := msg.Metadata.Get(ports.MetadataTopic)
			if topic == "" {
				topic = bindingTopic
			}
			sum := sha256.New()
			sum.Write([]byte(topic))
			sum.Write([]byte{0})
			sum.Write(msg.Payload)
			msg.UUID = hex.EncodeToString(sum.Sum(nil)[:16])
			return h(msg)
		}
	}
}
