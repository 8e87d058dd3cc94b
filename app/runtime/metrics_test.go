package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/ports"
)

// The metrics keep watermill's names and labels: one message handled with
// an event published, one that failed (a publish outage: nacked,
// redelivered, counted handed back) and then was handled, and one
// poisoned as invalid (acked, but not a success; the poison publish is
// timed too).
func TestHandlerMetrics(t *testing.T) {
	broker := newBroker(t)
	cfg := testConfig()
	cfg.Service = "plant-7" // an instance's name: the namespace stays the service's (hexmill)
	registry := prometheus.NewRegistry()
	var flakyCalls atomic.Int32
	handled := make(chan string, 2)
	pub := runtime.NewPublisher()
	h := ports.HandlerFunc{HandlerName: "test", Func: func(ctx context.Context, msg ports.Message) error {
		if msg.ID == "bad" {
			return ports.Invalid(errors.New("not a reading"))
		}
		if msg.ID == "flaky" && flakyCalls.Add(1) <= int32(cfg.Retry.MaxRetries)+1 {
			return fmt.Errorf("handler: %w", broken.Publish(ctx, testEvent{Input: msg.ID}))
		}
		handled <- msg.ID
		if msg.ID == "ok" {
			return pub.Publish(ctx, testEvent{Input: msg.ID})
		}
		return nil
	}}
	rt, err := runtime.New(runtime.Params{
		Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Transports: []runtime.Opener{memoryOpener(broker)}, Handlers: []ports.Handler{h}, Registry: registry, Publisher: pub,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	publish(t, broker, inTopic, "ok", "{}")
	publish(t, broker, inTopic, "flaky", "{}")
	publish(t, broker, inTopic, "bad", "{}")
	receive(t, broker, poisonTopic, 1)
	for range 2 {
		select {
		case <-handled:
		case <-time.After(10 * time.Second):
			t.Fatal("the messages were not handled")
		}
	}
	if err := rt.Stop(context.Background()); err != nil { // records what is in flight
		t.Fatal(err)
	}

	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		family string
		labels map[string]string
		want   float64
	}{
		{"hexmill_handler_execution_time_seconds", map[string]string{"handler_name": "test", "success": "true"}, 2},
		{"hexmill_handler_execution_time_seconds", map[string]string{"handler_name": "test", "success": "false"}, 2},
		{"hexmill_subscriber_messages_received_total", map[string]string{"handler_name": "test", "subscriber_name": "memory", "acked": "acked"}, 3},
		{"hexmill_messages_poisoned_total", map[string]string{"handler_name": "test", "reason": "invalid"}, 1},
		{"hexmill_messages_poisoned_total", map[string]string{"handler_name": "test", "reason": "retries_exhausted"}, 0},
		{"hexmill_messages_handed_back_total", map[string]string{"handler_name": "test", "reason": "publish_failed"}, 1},
		{"hexmill_subscriber_messages_received_total", map[string]string{"handler_name": "test", "subscriber_name": "memory", "acked": "nacked"}, 1},
		{"hexmill_publish_time_seconds", map[string]string{"handler_name": "test", "publisher_name": "memory", "success": "true"}, 2},
	}
	for _, tt := range tests {
		got, ok := sample(families, tt.family, tt.labels)
		if !ok || got != tt.want {
			t.Errorf("%s%v = %v (found %v), want %v", tt.family, tt.labels, got, ok, tt.want)
		}
	}
}

// sample is a counter's value or a histogram's count.
func sample(families []*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount()), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}
