package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/ports"
)

// delayingBroker is the memory transport made a transport.Delayer: a
// park is recorded and published back to the topic at once, so that the
// runtime's side of delayed retries runs without waiting.
type delayingBroker struct {
	*memory.Transport
	mu       sync.Mutex
	declared []time.Duration
	parked   []time.Duration
	fail     error // Delay's error, when set
}

func (b *delayingBroker) DeclareDelays(_ context.Context, _ transport.SubscriberConfig, _ string, delays []time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.declared = delays
	return nil
}

func (b *delayingBroker) Delay(_ context.Context, _ transport.SubscriberConfig, topic string, d time.Duration, msg *message.Message) error {
	b.mu.Lock()
	b.parked = append(b.parked, d)
	fail := b.fail
	b.mu.Unlock()
	if fail != nil {
		return fail
	}
	return b.Publish(topic, msg)
}

// A native Delayer gets every delay declared and each park in turn; the
// message comes back with delivery_attempt counted, and after the last
// delay it is poisoned with every delivery's reason. In-process retries
// run on each delivery first. The metrics count the parks.
func TestDelayedRetriesNative(t *testing.T) {
	mem := newBroker(t)
	broker := &delayingBroker{Transport: mem}
	cfg := testConfig()
	cfg.Retry.MaxRetries = 1
	cfg.Retry.Delayed = []time.Duration{time.Minute, time.Hour}
	registry := prometheus.NewRegistry()
	var mu sync.Mutex
	calls := map[string]int{} // by delivery_attempt
	h := ports.HandlerFunc{HandlerName: "test", Func: func(_ context.Context, msg ports.Message) error {
		mu.Lock()
		defer mu.Unlock()
		attempt := msg.Attributes[transport.MetadataDeliveryAttempt]
		calls[attempt]++
		return fmt.Errorf("down (delivery %q)", attempt)
	}}
	rt := startOnBroker(t, cfg, registry, mem, broker, h)
	defer func() { _ = rt.Stop(context.Background()) }()
	publish(t, mem, inTopic, "m", "{}")
	dead := receive(t, mem, poisonTopic, 1)[0]

	broker.mu.Lock()
	declared, parked := broker.declared, broker.parked
	broker.mu.Unlock()
	if fmt.Sprint(declared) != "[1m0s 1h0m0s]" || fmt.Sprint(parked) != "[1m0s 1h0m0s]" {
		t.Errorf("declared %v and parked for %v; want both [1m0s 1h0m0s]", declared, parked)
	}
	mu.Lock()
	if calls[""] != 2 || calls["2"] != 2 || calls["3"] != 2 {
		t.Errorf("handled %v times by delivery_attempt; want 2 (1 + max_retries) on each of 3 deliveries", calls)
	}
	mu.Unlock()
	reason := dead.Metadata.Get("reason_poisoned")
	for _, want := range []string{"retries_exhausted after 3 deliveries", `1: down (delivery "")`, `2: down (delivery "2")`, `3: down (delivery "3")`} {
		if !strings.Contains(reason, want) {
			t.Errorf("poison reason %q; want it to contain %q", reason, want)
		}
	}
	if got := dead.Metadata.Get(transport.MetadataDeliveryAttempt); got != "3" {
		t.Errorf("poisoned with delivery_attempt %q; want 3", got)
	}
	if err := rt.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, registry, "hexmill_messages_delayed_total", map[string]string{"handler_name": "test"}); got != 2 {
		t.Errorf("messages_delayed_total = %v; want 2", got)
	}
	if got := counterValue(t, registry, "hexmill_messages_poisoned_total", map[string]string{"handler_name": "test", "reason": "retries_exhausted"}); got != 1 {
		t.Errorf("messages_poisoned_total{retries_exhausted} = %v; want 1", got)
	}
}

// A park that fails hands the message back to its broker (counted
// park_failed) after the hand-back backoff, and past max_handbacks the
// message is poisoned (handed_back_too_often), as other hand-backs are.
func TestDelayedRetriesParkFails(t *testing.T) {
	mem := newBroker(t)
	broker := &delayingBroker{Transport: mem, fail: errors.New("broker gone")}
	cfg := testConfig()
	cfg.Retry.MaxRetries = 0
	cfg.Retry.Delayed = []time.Duration{time.Minute}
	b := cfg.Handlers["test"]
	b.MaxHandbacks = 2
	cfg.Handlers["test"] = b
	registry := prometheus.NewRegistry()
	h := ports.HandlerFunc{HandlerName: "test", Func: func(context.Context, ports.Message) error { return errors.New("down") }}
	rt := startOnBroker(t, cfg, registry, mem, broker, h)
	publish(t, mem, inTopic, "m", "{}")
	dead := receive(t, mem, poisonTopic, 1)[0]
	if r := dead.Metadata.Get("reason_poisoned"); !strings.HasPrefix(r, "handed_back_too_often: handed back 2 times") || !strings.Contains(r, "broker gone") {
		t.Errorf("poisoned with reason %q; want handed_back_too_often after 2, naming the park's error", r)
	}
	if err := rt.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, registry, "hexmill_messages_handed_back_total", map[string]string{"handler_name": "test", "reason": "park_failed"}); got != 2 {
		t.Errorf("messages_handed_back_total{park_failed} = %v; want 2", got)
	}
	if got := counterValue(t, registry, "hexmill_messages_delayed_total", map[string]string{"handler_name": "test"}); got != 0 {
		t.Errorf("messages_delayed_total = %v; want 0", got)
	}
}

// counterValue is the value of the counter family name with labels, 0
// when it has no such series.
func counterValue(t *testing.T, registry *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// startOnBroker starts a runtime with h on broker, which wraps mem, the
// memory transport it opens.
func startOnBroker(t *testing.T, cfg config.Config, registry *prometheus.Registry, mem *memory.Transport, broker transport.Transport, h ports.Handler) *runtime.Runtime {
	t.Helper()
	rt, err := runtime.New(runtime.Params{
		Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: registry,
		Transports: []runtime.Opener{{Name: config.TransportMemory, Open: func(ctx context.Context) (transport.Transport, error) {
			if err := mem.Open(ctx); err != nil {
				return nil, err
			}
			return broker, nil
		}}}, Handlers: []ports.Handler{h},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return rt
}
