// Package apptest is a test harness for a service's handlers, in the
// spirit of Spring Cloud Stream's test binder: it runs one handler on the
// framework's real runtime and middleware chain (retry, poison target,
// panic recovery, topic parameters, formats, the service's middlewares)
// over an in-memory transport of its own, and records the events the
// handler publishes and the messages it poisons.
//
//	h := apptest.New(t, domain.NewBatteryHandler)
//	h.Send(`{"percent":9}`, "device_id", "d1")
//	// h.Published() holds the BatteryLow event, h.Poisoned() nothing.
package apptest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/ports"
)

// Event is an event the handler published.
type Event struct {
	Type  string
	Event ports.Event
	// JSON is the event as it goes on the wire.
	JSON string
}

// Poisoned is a message the runtime sent to the poison target.
type Poisoned struct {
	Payload string
	// Reason is the handler's error (reason_poisoned).
	Reason string
}

// Outcome is what became of a message sent to the handler.
type Outcome string

// Outcomes.
const (
	// Handled: the handler returned nil, the message was acked.
	Handled Outcome = "handled"
	// PoisonedOutcome: the message went to the poison target (bad input,
	// or its retries ran out) and was acked.
	PoisonedOutcome Outcome = "poisoned"
	// HandedBack: the message was nacked for redelivery (its events could
	// not be published).
	HandedBack Outcome = "handed back"
)

// Harness runs one handler. Its methods may be called from one test
// goroutine at a time.
type Harness struct {
	t        testing.TB
	rt       *runtime.Runtime
	in       chan *message.Message
	mu       sync.Mutex
	events   []Event
	declared map[string]bool // the handler's ports.Emitter; nil: not declared
	poisoned []Poisoned
	fail     error
}

// Option changes the harness's configuration.
type Option func(*settings)

type settings struct {
	binding     config.Binding
	retry       config.RetryConfig
	formats     []runtime.NamedFormat
	middlewares []runtime.Middleware
}

// WithBinding changes the handler's binding (format, topic_params, topic,
// concurrency); its transport is the harness's.
func WithBinding(change func(*config.Binding)) Option {
	return func(s *settings) { change(&s.binding) }
}

// WithFormat offers format to the binding under name, as app.AsFormat.
func WithFormat(name string, format runtime.Format) Option {
	return func(s *settings) { s.formats = append(s.formats, runtime.NamedFormat{Name: name, Format: format}) }
}

// WithMiddleware adds a middleware to the chain, as app.AsMiddleware.
func WithMiddleware(m runtime.Middleware) Option {
	return func(s *settings) { s.middlewares = append(s.middlewares, m) }
}

// WithRetry sets the retries (the harness's default: 2, 1ms apart).
func WithRetry(r config.RetryConfig) Option {
	return func(s *settings) { s.retry = r }
}

const (
	transportName = "apptest"
	inTopic       = "apptest.in"
	poisonTopic   = "apptest.poison"
)

// New starts the handler newHandler returns, given the harness's
// publisher, on the runtime; it stops when the test ends.
func New[H ports.Handler](t testing.TB, newHandler func(ports.Publisher) H, opts ...Option) *Harness {
	t.Helper()
	s := settings{
		binding: config.Binding{Transport: transportName, Topic: inTopic, Concurrency: 1},
		retry:   config.RetryConfig{MaxRetries: 2, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, Multiplier: 1},
	}
	for _, o := range opts {
		o(&s)
	}
	h := &Harness{t: t, in: make(chan *message.Message)}
	handler := newHandler(recorder{h})
	cfg := config.Default("apptest")
	cfg.DrainTimeout = 5 * time.Second
	cfg.Retry = s.retry
	cfg.Handlers[handler.Name()] = s.binding
	if e, ok := any(handler).(ports.Emitter); ok && e.Emits() != nil {
		// The runtime checks the declared events against their bindings;
		// the recorder against what the handler publishes.
		h.declared = map[string]bool{}
		for _, t := range e.Emits() {
			h.declared[t] = true
			cfg.Events[t] = config.EventBinding{Transport: transportName, Topic: t}
		}
	}
	cfg.Poison = config.EventBinding{Transport: transportName, Topic: poisonTopic}
	rt, err := runtime.New(runtime.Params{
		Config:      cfg,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Transports:  []runtime.Opener{h.opener()},
		Handlers:    []ports.Handler{handler},
		Formats:     s.formats,
		Middlewares: append(slices.Clone(s.middlewares), h.readOnlyAttributes),
	})
	if err != nil {
		t.Fatalf("apptest: %v", err)
	}
	if err := rt.Start(context.Background()); err != nil {
		t.Fatalf("apptest: start: %v", err)
	}
	h.rt = rt
	t.Cleanup(func() {
		if err := rt.Stop(context.Background()); err != nil {
			t.Errorf("apptest: stop: %v", err)
		}
	})
	return h
}

// Send feeds payload to the handler, with metadata given as key, value
// pairs (attributes such as device_id, or what a format reads), and
// returns once the runtime settled it.
func (h *Harness) Send(payload string, metadata ...string) Outcome {
	h.t.Helper()
	if len(metadata)%2 != 0 {
		h.t.Fatalf("apptest: Send: metadata must be key, value pairs, got %d strings", len(metadata))
	}
	msg := message.NewMessage(watermill.NewUUID(), []byte(payload))
	for i := 0; i < len(metadata); i += 2 {
		msg.Metadata.Set(metadata[i], metadata[i+1])
	}
	poisonedBefore := len(h.Poisoned())
	timeout := time.After(30 * time.Second)
	select {
	case h.in <- msg:
	case <-timeout:
		h.t.Fatal("apptest: Send: the handler takes no message")
	}
	select {
	case <-msg.Acked():
		if len(h.Poisoned()) > poisonedBefore {
			return PoisonedOutcome
		}
		return Handled
	case <-msg.Nacked():
		return HandedBack
	case <-timeout:
		h.t.Fatal("apptest: Send: the message was not settled within 30s")
		return ""
	}
}

// readOnlyAttributes, the chain's innermost middleware, fails the test
// when the handler changed its message's attributes, which
// ports.Metadata declares read only: the runtime hands the handler the
// message's own metadata, which a retry and the poison target read.
func (h *Harness) readOnlyAttributes(handler string, next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		before := maps.Clone(msg.Metadata)
		out, err := next(msg)
		if !maps.Equal(before, msg.Metadata) {
			h.t.Errorf("apptest: handler %s changed its message's Attributes from %v to %v: they are read only (ports.Metadata); copy them with maps.Clone to change them",
				handler, before, msg.Metadata)
		}
		return out, err
	}
}

// Published returns the events published so far.
func (h *Harness) Published() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.events...)
}

// Poisoned returns the messages poisoned so far.
func (h *Harness) Poisoned() []Poisoned {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Poisoned(nil), h.poisoned...)
}

// FailPublish makes the handler's publishes fail with err (as a broker
// outage does: the message is handed back, not poisoned); nil ends it.
func (h *Harness) FailPublish(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail = err
}

// recorder is the handler's ports.Publisher.
type recorder struct{ h *Harness }

func (r recorder) Publish(_ context.Context, events ...ports.Event) error {
	r.h.mu.Lock()
	defer r.h.mu.Unlock()
	if r.h.fail != nil {
		return fmt.Errorf("publish: %w: %w", r.h.fail, runtime.ErrPublish)
	}
	for _, e := range events {
		if r.h.declared != nil && !r.h.declared[e.EventType()] {
			r.h.t.Errorf("apptest: the handler published %s, which its Emits does not declare", e.EventType())
		}
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("publish %s: %w", e.EventType(), err)
		}
		r.h.events = append(r.h.events, Event{Type: e.EventType(), Event: e, JSON: string(b)})
	}
	return nil
}

// opener is the harness's transport: the handler's subscription reads
// what Send feeds; the poison target records.
func (h *Harness) opener() runtime.Opener {
	return runtime.Opener{Name: transportName, Open: func(context.Context) (transport.Transport, error) {
		return harnessTransport{h}, nil
	}}
}

// harnessTransport is the transport.Transport of the harness.
type harnessTransport struct{ h *Harness }

func (harnessTransport) Open(context.Context) error { return nil }

func (t harnessTransport) Publisher(map[string]string) (message.Publisher, error) {
	return poisonSink(t), nil
}

func (t harnessTransport) Subscriber(transport.SubscriberConfig) (message.Subscriber, error) {
	return &feed{in: t.h.in}, nil
}

func (harnessTransport) Ready() error { return nil }
func (harnessTransport) Close() error { return nil }

type poisonSink struct{ h *Harness }

func (p poisonSink) Publish(_ string, msgs ...*message.Message) error {
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	for _, m := range msgs {
		p.h.poisoned = append(p.h.poisoned, Poisoned{Payload: string(m.Payload), Reason: m.Metadata.Get(middleware.ReasonForPoisonedKey)})
	}
	return nil
}

func (poisonSink) Close() error { return nil }

// feed is the subscriber: Send hands it the message, the runtime settles
// it on the message itself.
type feed struct {
	in   chan *message.Message
	once sync.Once
	done chan struct{}
	wg   sync.WaitGroup
}

func (f *feed) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	f.done = make(chan struct{})
	out := make(chan *message.Message)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case <-f.done:
				return
			case msg := <-f.in:
				select {
				case out <- msg:
				case <-ctx.Done():
					msg.Nack()
					return
				case <-f.done:
					msg.Nack()
					return
				}
			}
		}
	}()
	return out, nil
}

func (f *feed) Close() error {
	f.once.Do(func() {
		if f.done != nil {
			close(f.done)
		}
	})
	f.wg.Wait()
	return nil
}
