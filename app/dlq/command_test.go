package dlq

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
)

func TestFilterMatch(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	l := Letter{ID: "7", Handler: "device-status", Reason: "device status: at ... than clock_skew allows", Last: now.Add(-2 * time.Hour)}
	for _, c := range []struct {
		name string
		f    Filter
		want bool
	}{
		{"all", Filter{}, true},
		{"id", Filter{IDs: []string{"6", "7"}}, true},
		{"other id", Filter{IDs: []string{"6"}}, false},
		{"handler", Filter{Handler: "device-status"}, true},
		{"other handler", Filter{Handler: "telemetry"}, false},
		{"reason any case", Filter{Reason: "CLOCK_SKEW"}, true},
		{"other reason", Filter{Reason: "readings"}, false},
		{"older than 1h", Filter{OlderThan: time.Hour}, true},
		{"older than 3h", Filter{OlderThan: 3 * time.Hour}, false},
		{"newer than 3h", Filter{NewerThan: 3 * time.Hour}, true},
		{"newer than 1h", Filter{NewerThan: time.Hour}, false},
	} {
		if got := c.f.match(l, now); got != c.want {
			t.Errorf("%s: match %v, want %v", c.name, got, c.want)
		}
	}
}

func TestReplayMetadata(t *testing.T) {
	first := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	l := Letter{First: first, Metadata: map[string]string{"reason_poisoned": "x", "handler_poisoned": "h", "topic_poisoned": "t",
		"subscriber_poisoned": "rabbitmq", "poisoned_at": "y", "topic": "q", "correlation_id": "c", "device": "d"}}
	md := replayMetadata(l, now)
	want := map[string]string{"correlation_id": "c", "device": "d", "first_poisoned_at": "2026-12-01T00:00:00Z", "replayed": "2026-12-06T00:00:00Z"}
	if len(md) != len(want) {
		t.Fatalf("metadata %v, want %v", md, want)
	}
	for k, v := range want {
		if md[k] != v {
			t.Errorf("%s = %q, want %q", k, md[k], v)
		}
	}
	if l.Metadata["reason_poisoned"] != "x" {
		t.Error("the letter's own metadata changed")
	}
}

// A replay refuses what it cannot deliver before it opens anything: a
// handler no longer bound, and one bound to memory (inside the service's
// process).
func TestSendRefuses(t *testing.T) {
	cfg := config.Config{Handlers: map[string]config.Binding{"telemetry": {Transport: config.TransportMemory, Topic: "t"}}}
	s := &sender{cfg: cfg, open: func(context.Context, string) (transport.Transport, error) {
		t.Fatal("send opened a transport")
		return nil, nil
	}}
	for _, c := range []struct{ handler, want string }{
		{"telemetry", "consumes from memory"},
		{"gone", `handler "gone" has no binding in this configuration`},
	} {
		err := s.send(context.Background(), Letter{ID: "1", Handler: c.handler})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("send to %s: %v, want %q", c.handler, err, c.want)
		}
	}
}
