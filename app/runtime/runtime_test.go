package runtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.uber.org/goleak"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/ports"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(integration.WithBrokers(m))
}

const (
	inTopic     = "in"
	outTopic    = "out"
	poisonTopic = "poison"
	group       = "g"
)

// testEvent is what the test handlers publish.
type testEvent struct {
	Input string `json:"input"`
}

func (testEvent) EventType() string { return "TestEvent" }

func testConfig() config.Config {
	cfg := config.Default("hexmill")
	cfg.DrainTimeout = 5 * time.Second
	cfg.Retry = config.RetryConfig{MaxRetries: 2, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, Multiplier: 2}
	cfg.Handlers = map[string]config.Binding{"test": {Transport: config.TransportMemory, Topic: inTopic, Group: group, Concurrency: 8, TopicParams: "{kind}"}}
	cfg.Events = map[string]config.EventBinding{"TestEvent": {Transport: config.TransportMemory, Topic: outTopic}}
	cfg.Poison = config.EventBinding{Transport: config.TransportMemory, Topic: poisonTopic}
	return cfg
}

func newBroker(t *testing.T) *memory.Transport {
	t.Helper()
	b, err := memory.New(memory.Config{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startRuntime runs handle as handler "test" on broker; it returns the
// runtime and its publisher, and stops it when the test ends unless the
// test stopped it.
func startRuntime(t *testing.T, cfg config.Config, broker *memory.Transport, handle func(ctx context.Context, pub ports.Publisher, msg ports.Message) error) *runtime.Runtime {
	t.Helper()
	pub := runtime.NewPublisher()
	h := ports.HandlerFunc{HandlerName: "test", Func: func(ctx context.Context, msg ports.Message) error {
		return handle(ctx, pub, msg)
	}}
	rt, err := runtime.New(runtime.Params{
		Config:     cfg,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Transports: []runtime.Opener{memoryOpener(broker)},
		Handlers:   []ports.Handler{h},
		Publisher:  pub,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background()) })
	return rt
}

// memoryOpener opens the in-memory transport b, as app.MemoryOpener does
// in the fx graph.
func memoryOpener(b *memory.Transport) runtime.Opener {
	return runtime.Opener{Name: config.TransportMemory, Open: func(ctx context.Context) (transport.Transport, error) {
		if err := b.Open(ctx); err != nil {
			return nil, err
		}
		return b, nil
	}}
}

func publish(t *testing.T, b *memory.Transport, topic, id, payload string) *message.Message {
	t.Helper()
	msg := message.NewMessage(id, []byte(payload))
	if err := b.Publish(topic, msg); err != nil {
		t.Fatal(err)
	}
	return msg
}

// receive reads n messages of topic in its own group and acks them.
func receive(t *testing.T, b *memory.Transport, topic string, n int) []*message.Message {
	t.Helper()
	sub, err := b.Subscriber(memory.SubscriberConfig{Group: "test-reader", Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var got []*message.Message
	for len(got) < n {
		select {
		case m := <-msgs:
			m.Ack()
			got = append(got, m)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: got %d messages, want %d", topic, len(got), n)
		}
	}
	return got
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A handler mid-way when stop begins finishes: its event is published (the
// publisher is still open, unlike watermill's Router.Close, upstream issue
// #446) and its input is acked once; nothing comes back.
func TestStopDrainsInFlightHandlers(t *testing.T) {
	broker := newBroker(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	publishErr := make(chan error, 1)
	rt := startRuntime(t, testConfig(), broker, func(ctx context.Context, pub ports.Publisher, msg ports.Message) error {
		calls.Add(1)
		close(entered)
		<-release
		err := pub.Publish(ctx, testEvent{Input: msg.ID})
		publishErr <- err
		return err
	})
	publish(t, broker, inTopic, "m1", "{}")
	<-entered

	stopped := make(chan error, 1)
	go func() { stopped <- rt.Stop(context.Background()) }()
	waitFor(t, "intake to stop", func() bool { return rt.Ready() != nil })
	select {
	case err := <-stopped:
		t.Fatalf("stop returned while a handler was in flight: %v", err)
	default:
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("stop: %v", err)
	}

	if err := <-publishErr; err != nil {
		t.Fatalf("publish from the draining handler: %v", err)
	}
	out := receive(t, broker, outTopic, 1)
	var ev testEvent
	if err := json.Unmarshal(out[0].Payload, &ev); err != nil || ev.Input != "m1" {
		t.Fatalf("event = %s (%v), want input m1", out[0].Payload, err)
	}
	if d := broker.Depth(inTopic, group); d != 0 {
		t.Fatalf("input queue holds %d messages after an acked drain, want 0", d)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
}

// When the drain timeout expires, the unfinished message goes back to the
// broker and the next start handles it; it is not poisoned.
func TestStopAfterDrainTimeoutRedelivers(t *testing.T) {
	broker := newBroker(t)
	cfg := testConfig()
	cfg.DrainTimeout = 50 * time.Millisecond
	entered := make(chan struct{})
	first := startRuntime(t, cfg, broker, func(ctx context.Context, _ ports.Publisher, _ ports.Message) error {
		close(entered)
		<-ctx.Done() // a handler slower than the drain timeout
		return ctx.Err()
	})
	publish(t, broker, inTopic, "slow", "{}")
	<-entered
	if err := first.Stop(context.Background()); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if d := broker.Depth(inTopic, group); d != 1 {
		t.Fatalf("input queue holds %d messages after the drain timeout, want the unfinished one back", d)
	}

	handled := make(chan string, 1)
	startRuntime(t, cfg, broker, func(_ context.Context, _ ports.Publisher, msg ports.Message) error {
		handled <- msg.ID
		return nil
	})
	select {
	case id := <-handled:
		if id != "slow" {
			t.Fatalf("redelivered %q, want slow", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the unfinished message was not redelivered on the next start")
	}
	if d := broker.Depth(poisonTopic, ""); d != 0 {
		t.Fatalf("%d messages poisoned, want 0", d)
	}
}

// A failing handler is retried; after the last retry its message goes to
// the poison target with the reason, and the messages behind it are handled.
// Invalid input skips the retries.
func TestPoisonAfterRetries(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantCalls int32
	}{
		{"transient error retried", errors.New("database down"), 3},
		{"invalid input not retried", ports.Invalid(errors.New("temperature is not a number")), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			broker := newBroker(t)
			var badCalls atomic.Int32
			good := make(chan string, 10)
			startRuntime(t, testConfig(), broker, func(_ context.Context, _ ports.Publisher, msg ports.Message) error {
				if msg.ID == "bad" {
					badCalls.Add(1)
					return tt.err
				}
				good <- msg.ID
				return nil
			})
			publish(t, broker, inTopic, "bad", `{"x":1}`)
			publish(t, broker, inTopic, "good", "{}")

			poisoned := receive(t, broker, poisonTopic, 1)[0]
			if poisoned.UUID != "bad" || string(poisoned.Payload) != `{"x":1}` {
				t.Fatalf("poisoned %s %s, want bad with its payload", poisoned.UUID, poisoned.Payload)
			}
			for key, want := range map[string]string{
				middleware.ReasonForPoisonedKey:  tt.err.Error(),
				middleware.PoisonedHandlerKey:    "test",
				middleware.PoisonedTopicKey:      inTopic,
				middleware.PoisonedSubscriberKey: config.TransportMemory,
			} {
				if got := poisoned.Metadata.Get(key); got != want {
					t.Errorf("poisoned message's %s = %q, want %q", key, got, want)
				}
			}
			if got := badCalls.Load(); got != tt.wantCalls {
				t.Fatalf("bad message handled %d times, want %d", got, tt.wantCalls)
			}
			select {
			case id := <-good:
				if id != "good" {
					t.Fatalf("handled %q, want good", id)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the message behind the poison one was not handled")
			}
		})
	}
}

// Metadata that is not valid UTF-8 (a header or user property of a sender
// that does not keep to its protocol) is poisoned before the handler sees
// it, with a reason naming the key; the correlation ID, binary in MQTT, is
// not checked; the messages around it are handled.
func TestInvalidUTF8MetadataPoisoned(t *testing.T) {
	tests := []struct {
		name       string
		key, value string
		poisoned   bool
		reason     string
	}{
		{"invalid value", "firmware", "v1\xff\xfe", true, `metadata "firmware": the value "v1\xff\xfe" is not valid UTF-8`},
		{"invalid key", "fw\xc3", "1", true, `metadata key "fw\xc3" is not valid UTF-8`},
		{"binary correlation ID", ports.MetadataCorrelationID, "\x00\xff\x10", false, ""},
		{"valid UTF-8", "firmware", "v1.2 – ünïcode", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			broker := newBroker(t)
			handled := make(chan string, 10)
			startRuntime(t, testConfig(), broker, func(_ context.Context, _ ports.Publisher, msg ports.Message) error {
				handled <- msg.ID
				return nil
			})
			in := message.NewMessage("odd", []byte("{}"))
			in.Metadata.Set(tt.key, tt.value)
			if err := broker.Publish(inTopic, in); err != nil {
				t.Fatal(err)
			}
			publish(t, broker, inTopic, "good", "{}")
			want := map[string]bool{"good": true}
			if !tt.poisoned {
				want["odd"] = true
			}
			for len(want) > 0 {
				select {
				case id := <-handled:
					if !want[id] {
						t.Fatalf("handled %q", id)
					}
					delete(want, id)
				case <-time.After(10 * time.Second):
					t.Fatalf("not handled: %v", want)
				}
			}
			if !tt.poisoned {
				return
			}
			poisoned := receive(t, broker, poisonTopic, 1)[0]
			if poisoned.UUID != "odd" || poisoned.Metadata.Get(tt.key) != tt.value {
				t.Fatalf("poisoned %s with %q=%q, want odd as it came", poisoned.UUID, tt.key, poisoned.Metadata.Get(tt.key))
			}
			if reason := poisoned.Metadata.Get(middleware.ReasonForPoisonedKey); !strings.HasPrefix(reason, tt.reason) {
				t.Fatalf("poison reason %q, want it to start with %q", reason, tt.reason)
			}
		})
	}
}

// A panic is recovered, retried and poisoned like an error; the service
// goes on.
func TestPanicIsRecovered(t *testing.T) {
	broker := newBroker(t)
	startRuntime(t, testConfig(), broker, func(_ context.Context, _ ports.Publisher, msg ports.Message) error {
		if msg.ID == "boom" {
			panic("handler bug")
		}
		return nil
	})
	publish(t, broker, inTopic, "boom", "{}")
	if got := receive(t, broker, poisonTopic, 1)[0]; got.UUID != "boom" {
		t.Fatalf("poisoned %s, want boom", got.UUID)
	}
}

// The handler gets the message's metadata, and events it publishes carry
// the correlation ID on.
func TestMetadataAndCorrelation(t *testing.T) {
	broker := newBroker(t)
	got := make(chan ports.Message, 1)
	startRuntime(t, testConfig(), broker, func(ctx context.Context, pub ports.Publisher, msg ports.Message) error {
		got <- msg
		return pub.Publish(ctx, testEvent{Input: msg.ID})
	})
	in := message.NewMessage("m1", []byte("{}"))
	in.Metadata.Set(ports.MetadataCorrelationID, "corr-7")
	in.Metadata.Set("source", "test")
	if err := broker.Publish(inTopic, in); err != nil {
		t.Fatal(err)
	}
	msg := <-got
	if msg.ID != "m1" || msg.CorrelationID != "corr-7" || msg.Topic != inTopic || msg.ReceivedAt.IsZero() {
		t.Fatalf("metadata = %+v", msg.Metadata)
	}
	if msg.Attributes["source"] != "test" || msg.Attributes["kind"] != inTopic {
		t.Fatalf("attributes = %v, want source=test and kind=%s from topic_params", msg.Attributes, inTopic)
	}
	out := receive(t, broker, outTopic, 1)[0]
	if c := out.Metadata.Get(ports.MetadataCorrelationID); c != "corr-7" {
		t.Fatalf("event correlation ID %q, want corr-7", c)
	}
	if et := out.Metadata.Get(ports.MetadataEventType); et != "TestEvent" {
		t.Fatalf("event type %q, want TestEvent", et)
	}
}

func TestNewRefusesUnboundHandlers(t *testing.T) {
	for _, tc := range []struct {
		handler, binding, field, want string
	}{
		{"unbound", "", "handlers.unbound", "registered but not bound; set handlers.unbound.transport"},
		// A typo in the binding's key names the handler it misses.
		{"firmware", "firmwar", "handlers.firmware", "did you mean handlers.firmware for handlers.firmwar?"},
	} {
		t.Run(tc.handler, func(t *testing.T) {
			cfg := testConfig()
			if tc.binding != "" {
				cfg.Handlers[tc.binding] = config.Binding{Transport: config.TransportMemory, Topic: "other"}
			}
			h := ports.HandlerFunc{HandlerName: tc.handler, Func: func(context.Context, ports.Message) error { return nil }}
			_, err := runtime.New(runtime.Params{Config: cfg, Transports: []runtime.Opener{memoryOpener(newBroker(t))}, Handlers: []ports.Handler{h}})
			var ce *ports.FieldError
			if !errors.As(err, &ce) || ce.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a *ports.FieldError on %s saying %q", err, tc.field, tc.want)
			}
		})
	}
}

// Handlers that declare their events (ports.Emitter) have them checked
// against events.* when the runtime is built: a typo names the closest key.
func TestNewChecksDeclaredEvents(t *testing.T) {
	noop := func(context.Context, ports.Message) error { return nil }
	declaring := func(name string, events ...string) ports.Handler {
		return ports.HandlerFunc{HandlerName: name, Func: noop, Events: append([]string{}, events...)} // declared, maybe empty
	}
	undeclared := ports.HandlerFunc{HandlerName: "other", Func: noop}
	cases := []struct {
		name     string
		handlers []ports.Handler
		events   []string // bound event types
		field    string   // "" for no error
		want     []string
	}{
		{name: "declared and bound", handlers: []ports.Handler{declaring("test", "TestEvent")}, events: []string{"TestEvent"}},
		{name: "bound in another case", handlers: []ports.Handler{declaring("test", "TestEvent")}, events: []string{"testevent"}},
		{name: "typo in the binding", handlers: []ports.Handler{declaring("test", "BatteryLow")}, events: []string{"BateryLow"},
			field: "events.BatteryLow", want: []string{"handler test publishes BatteryLow", "did you mean events.BatteryLow for events.BateryLow?"}},
		{name: "declared, not bound", handlers: []ports.Handler{declaring("test", "BatteryLow")}, events: []string{"TestEvent"},
			field: "events.BatteryLow", want: []string{"no binding", "HEXMILL_EVENTS_BATTERYLOW_TRANSPORT"}},
		{name: "near miss next to an undeclared handler", handlers: []ports.Handler{declaring("test", "BatteryLow", "TestEvent"), undeclared}, events: []string{"BatteryLow", "TestEvent", "TestEvnt"},
			field: "events.TestEvnt", want: []string{"did you mean TestEvent?"}},
		{name: "unknown binding next to an undeclared handler", handlers: []ports.Handler{declaring("test", "TestEvent"), undeclared}, events: []string{"TestEvent", "Elsewhere"}},
		{name: "unknown binding, every handler declares", handlers: []ports.Handler{declaring("test", "TestEvent"), declaring("other")}, events: []string{"TestEvent", "Elsewhere"},
			field: "events.Elsewhere", want: []string{"no handler publishes Elsewhere; remove the binding"}},
		{name: "nothing declared", handlers: []ports.Handler{declaring("test"), declaring("other")}, events: []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Events = map[string]config.EventBinding{}
			for _, e := range tc.events {
				cfg.Events[e] = config.EventBinding{Transport: config.TransportMemory, Topic: outTopic}
			}
			for _, h := range tc.handlers {
				if _, ok := cfg.Handlers[h.Name()]; !ok {
					cfg.Handlers[h.Name()] = config.Binding{Transport: config.TransportMemory, Topic: "other"}
				}
			}
			_, err := runtime.New(runtime.Params{Config: cfg, Transports: []runtime.Opener{memoryOpener(newBroker(t))}, Handlers: tc.handlers})
			if tc.field == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			var ce *ports.FieldError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("err = %v, want a *ports.FieldError on %s", err, tc.field)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want it to say %q", err, w)
				}
			}
		})
	}
}

type fixedClock struct{}

func (fixedClock) Now() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }

// A handler whose events cannot be published (the output broker is down)
// is retried and then handed back for redelivery: its message is not
// poisoned, and it is handled again once publishing works.
func TestPublishFailureIsRedeliveredNotPoisoned(t *testing.T) {
	broker := newBroker(t)
	cfg := testConfig()
	outage := make(chan struct{})
	var calls atomic.Int32
	handled := make(chan struct{})
	startRuntime(t, cfg, broker, func(ctx context.Context, pub ports.Publisher, msg ports.Message) error {
		n := calls.Add(1)
		select {
		case <-outage:
		default:
			if n == int32(cfg.Retry.MaxRetries)+1 {
				close(outage) // the outage ends after the first round of retries
			}
			return fmt.Errorf("handler: %w", broken.Publish(ctx, testEvent{Input: msg.ID}))
		}
		close(handled)
		return pub.Publish(ctx, testEvent{Input: msg.ID})
	})
	publish(t, broker, inTopic, "m1", "{}")
	select {
	case <-handled:
	case <-time.After(10 * time.Second):
		t.Fatal("the message was not redelivered after the publish failures")
	}
	receive(t, broker, outTopic, 1)
	if d := broker.Depth(poisonTopic, ""); d != 0 {
		t.Fatalf("%d messages poisoned because publishing failed, want 0", d)
	}
}

// broken is a publisher whose broker is down: the runtime's publisher
// before start.
var broken = runtime.NewPublisher()

// The binding's concurrency is how many handlers run at once.
func TestHandlersRunConcurrently(t *testing.T) {
	broker := newBroker(t)
	cfg := testConfig()
	n := cfg.Handlers["test"].Concurrency
	var in, most atomic.Int32
	all := make(chan struct{})
	startRuntime(t, cfg, broker, func(context.Context, ports.Publisher, ports.Message) error {
		now := in.Add(1)
		defer in.Add(-1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		if now == int32(n) {
			close(all)
		}
		<-all
		return nil
	})
	for i := range n {
		publish(t, broker, inTopic, fmt.Sprint(i), "{}")
	}
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		t.Fatalf("at most %d handlers ran at once, want %d", most.Load(), n)
	}
}

// A subscription that ends while the service runs makes it unready,
// naming the handler.
func TestEndedSubscriptionIsNotReady(t *testing.T) {
	broker := newBroker(t)
	msgs := make(chan *message.Message)
	opener := runtime.Opener{Name: config.TransportMemory, Open: func(context.Context) (transport.Transport, error) {
		return chanTransport{Transport: broker, msgs: msgs}, nil
	}}
	h := ports.HandlerFunc{HandlerName: "test", Func: func(context.Context, ports.Message) error { return nil }}
	rt, err := runtime.New(runtime.Params{
		Config: testConfig(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Transports: []runtime.Opener{opener}, Handlers: []ports.Handler{h},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer rt.Stop(context.Background())
	if err := rt.Ready(); err != nil {
		t.Fatalf("ready after start: %v", err)
	}
	close(msgs)
	waitFor(t, "the service to report not ready", func() bool { return rt.Ready() != nil })
	if err := rt.Ready(); !strings.Contains(err.Error(), "test") {
		t.Fatalf("Ready() = %v, want it to name the handler", err)
	}
}

// chanTransport is the memory transport, its subscribers replaced by a
// chanSubscriber.
type chanTransport struct {
	*memory.Transport
	msgs chan *message.Message
}

func (c chanTransport) Subscriber(transport.SubscriberConfig) (message.Subscriber, error) {
	return chanSubscriber(c.msgs), nil
}

// chanSubscriber delivers what its channel carries.
type chanSubscriber chan *message.Message

func (c chanSubscriber) Subscribe(context.Context, string) (<-chan *message.Message, error) {
	return c, nil
}

func (chanSubscriber) Close() error { return nil }

// A binding whose publishes keep failing makes the service unready after
// publish_unready_after, and ready again once they work.
func TestPublishFailureMakesUnready(t *testing.T) {
	broker, err := memory.New(memory.Config{QueueLimit: 1}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.PublishUnreadyAfter = time.Nanosecond
	rt := startRuntime(t, cfg, broker, func(ctx context.Context, pub ports.Publisher, msg ports.Message) error {
		return pub.Publish(ctx, testEvent{Input: msg.ID})
	})
	publish(t, broker, inTopic, "m1", "{}") // fills the event topic, which nobody reads yet
	waitFor(t, "m1's event", func() bool { return broker.Depth(outTopic, "") == 1 })
	if err := rt.Ready(); err != nil {
		t.Fatalf("Ready() = %v after a publish that worked", err)
	}
	publish(t, broker, inTopic, "m2", "{}") // its event does not fit: handed back, again and again
	waitFor(t, "unready", func() bool {
		err := rt.Ready()
		return err != nil && strings.Contains(err.Error(), "events.TestEvent has failed to publish")
	})
	receive(t, broker, outTopic, 2) // a reader drains the topic: m2's event goes through
	waitFor(t, "ready again", func() bool { return rt.Ready() == nil })
}

// Attributes from topic_params win over the sender's metadata of the same
// name, and the topic is the one the message arrived on, whatever its
// metadata says.
func TestTopicParamsWinOverSenderMetadata(t *testing.T) {
	broker := newBroker(t)
	got := make(chan ports.Message, 1)
	startRuntime(t, testConfig(), broker, func(_ context.Context, _ ports.Publisher, msg ports.Message) error {
		got <- msg
		return nil
	})
	in := message.NewMessage("m1", []byte("{}"))
	in.Metadata.Set("kind", "forged")
	in.Metadata.Set(ports.MetadataTopic, "forged")
	if err := broker.Publish(inTopic, in); err != nil {
		t.Fatal(err)
	}
	msg := <-got
	if msg.Topic != inTopic || msg.Attributes["kind"] != inTopic || msg.Attributes[ports.MetadataTopic] != inTopic {
		t.Fatalf("topic %q, attributes %v: want the topic %s and kind=%s", msg.Topic, msg.Attributes, inTopic, inTopic)
	}
}

// A message whose topic does not match topic_params is poisoned at once,
// never handled with the attributes its sender chose.
func TestTopicParamsMismatchPoisons(t *testing.T) {
	broker := newBroker(t)
	cfg := testConfig()
	b := cfg.Handlers["test"]
	b.TopicParams = "devices/{device_id}"
	cfg.Handlers["test"] = b
	var handled atomic.Int32
	startRuntime(t, cfg, broker, func(context.Context, ports.Publisher, ports.Message) error {
		handled.Add(1)
		return nil
	})
	in := message.NewMessage("m1", []byte("{}"))
	in.Metadata.Set("device_id", "someone-else")
	if err := broker.Publish(inTopic, in); err != nil {
		t.Fatal(err)
	}
	got := receive(t, broker, poisonTopic, 1)[0]
	if reason := got.Metadata.Get(middleware.ReasonForPoisonedKey); !strings.Contains(reason, "does not match the binding's topic_params") {
		t.Fatalf("poison reason %q", reason)
	}
	if n := handled.Load(); n != 0 {
		t.Fatalf("handled %d times, want never", n)
	}
}

// A handler's Attributes are the message's metadata, not a copy, when
// there are no topic parameters to add: the runtime writes nothing into
// them after the handler had them (the poison keys go into a copy), so a
// handler that keeps the map and reads it on, from another goroutine,
// never races with the runtime (-race) and never sees them change.
func TestRuntimeWritesNoAttributesAHandlerHolds(t *testing.T) {
	tests := []struct {
		name        string
		topicParams string
	}{
		{"no topic parameters", ""},
		{"topic parameters", "{kind}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			broker := newBroker(t)
			cfg := testConfig()
			b := cfg.Handlers["test"]
			b.TopicParams = tt.topicParams
			cfg.Handlers["test"] = b
			kept := make(chan map[string]string, 8)
			startRuntime(t, cfg, broker, func(_ context.Context, _ ports.Publisher, msg ports.Message) error {
				kept <- msg.Attributes
				return errors.New("fails every attempt")
			})
			snapshot := make(chan map[string]string, 1)
			done := make(chan struct{})
			held := make(chan map[string]string, 1)
			go func() { // reads what the handler kept until the message is poisoned
				attrs := <-kept
				snapshot <- maps.Clone(attrs)
				defer func() { held <- attrs }()
				for {
					select {
					case <-done:
						return
					default:
						_ = attrs["sender"]
					}
				}
			}()
			in := message.NewMessage("m1", []byte("{}"))
			in.Metadata.Set("sender", "s1")
			if err := broker.Publish(inTopic, in); err != nil {
				t.Fatal(err)
			}
			poisoned := receive(t, broker, poisonTopic, 1)[0]
			close(done)
			if got := poisoned.Metadata.Get(middleware.ReasonForPoisonedKey); got != "fails every attempt" || poisoned.Metadata.Get("sender") != "s1" {
				t.Fatalf("poisoned with metadata %v, want the reason and the sender's entry", poisoned.Metadata)
			}
			before, after := <-snapshot, <-held
			if before["sender"] != "s1" || !maps.Equal(before, after) {
				t.Fatalf("the attributes a handler kept changed from %v to %v after it returned", before, after)
			}
		})
	}
}

// Every attempt's context carries the message's correlation ID, and so do
// contexts derived from it: the one the sender set, else the message's
// ID.
func TestCorrelationIDInEveryAttempt(t *testing.T) {
	tests := []struct {
		name, sent, want string
	}{
		{"sent", "corr-7", "corr-7"},
		{"not sent", "", "m1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			broker := newBroker(t)
			seen := make(chan string, 6)
			var attempts atomic.Int32
			startRuntime(t, testConfig(), broker, func(ctx context.Context, _ ports.Publisher, _ ports.Message) error {
				derived, cancel := context.WithCancel(ctx)
				defer cancel()
				seen <- ports.CorrelationID(ctx)
				seen <- ports.CorrelationID(derived)
				if attempts.Add(1) < 3 {
					return errors.New("fails twice")
				}
				return nil
			})
			in := message.NewMessage("m1", []byte("{}"))
			if tt.sent != "" {
				in.Metadata.Set(ports.MetadataCorrelationID, tt.sent)
			}
			if err := broker.Publish(inTopic, in); err != nil {
				t.Fatal(err)
			}
			for i := range 6 {
				select {
				case got := <-seen:
					if got != tt.want {
						t.Fatalf("attempt %d: correlation ID %q, want %q", i/2+1, got, tt.want)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%d of 3 attempts seen", i/2)
				}
			}
		})
	}
}
