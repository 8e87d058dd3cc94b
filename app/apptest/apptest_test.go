package apptest_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/hexmill/hexmill/app/apptest"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type low struct {
	Device string `json:"device"`
	Level  int    `json:"level"`
}

func (low) EventType() string { return "Low" }

// newLevelHandler publishes Low below 10; a level above 100 is invalid; a
// level of 50 fails (a transient error) every time.
func newLevelHandler(pub ports.Publisher) ports.Handler {
	return ports.JSONHandler("level", func(ctx context.Context, in struct{ Level int }, md ports.Metadata) error {
		switch {
		case in.Level > 100:
			return ports.Invalid(fmt.Errorf("level %d is above 100", in.Level))
		case in.Level == 50:
			return errors.New("database down")
		case in.Level < 10:
			return pub.Publish(ctx, low{Device: md.Attributes["device_id"], Level: in.Level})
		}
		return nil
	})
}

func TestHarness(t *testing.T) {
	h := apptest.New(t, newLevelHandler)
	if got := h.Send(`{"level":5}`, "device_id", "d1"); got != apptest.Handled {
		t.Fatalf("level 5: %s, want handled", got)
	}
	if got := h.Send(`{"level":70}`); got != apptest.Handled {
		t.Fatalf("level 70: %s, want handled", got)
	}
	if got := h.Send(`{"level":500}`); got != apptest.PoisonedOutcome {
		t.Fatalf("level 500: %s, want poisoned", got)
	}
	if got := h.Send(`{"level":50}`); got != apptest.PoisonedOutcome {
		t.Fatalf("level 50: %s, want poisoned after its retries", got)
	}
	events := h.Published()
	if len(events) != 1 || events[0].Type != "Low" || events[0].JSON != `{"device":"d1","level":5}` {
		t.Fatalf("published %+v, want one Low of d1", events)
	}
	poisoned := h.Poisoned()
	if len(poisoned) != 2 || !strings.Contains(poisoned[0].Reason, "above 100") || poisoned[1].Payload != `{"level":50}` ||
		!strings.Contains(poisoned[1].Reason, "database down") {
		t.Fatalf("poisoned %+v, want level 500 (invalid) then level 50 (retries ran out)", poisoned)
	}
}

// A publish outage hands the message back; it is not poisoned.
func TestHarnessPublishOutage(t *testing.T) {
	h := apptest.New(t, newLevelHandler)
	h.FailPublish(errors.New("broker down"))
	if got := h.Send(`{"level":1}`); got != apptest.HandedBack {
		t.Fatalf("%s, want handed back", got)
	}
	if p := h.Poisoned(); len(p) != 0 {
		t.Fatalf("poisoned %+v during a publish outage", p)
	}
}

// The harness runs the binding's format and the service's middlewares.
func TestHarnessFormatAndMiddleware(t *testing.T) {
	var seen atomic.Int32
	h := apptest.New(t, newLevelHandler,
		apptest.WithFormat("percent", func(msg *message.Message) error {
			msg.Payload = []byte(`{"level":` + strings.TrimSuffix(string(msg.Payload), "%") + `}`)
			return nil
		}),
		apptest.WithBinding(func(b *config.Binding) { b.Format = "percent" }),
		apptest.WithMiddleware(func(handler string, next message.HandlerFunc) message.HandlerFunc {
			return func(msg *message.Message) ([]*message.Message, error) {
				if handler == "level" {
					seen.Add(1)
				}
				return next(msg)
			}
		}),
	)
	h.Send("3%")
	if e := h.Published(); len(e) != 1 || e[0].JSON != `{"device":"","level":3}` {
		t.Fatalf("published %+v, want Low level 3 from the translated payload", e)
	}
	if seen.Load() != 1 {
		t.Fatalf("middleware saw %d messages, want 1", seen.Load())
	}
}

// errorsTB records what a harness reports with Errorf.
type errorsTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (e *errorsTB) Errorf(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, fmt.Sprintf(format, args...))
}

func (e *errorsTB) reported() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.errs)
}

// The harness fails a test whose handler changes its message's
// Attributes (read only, ports.Metadata), and only such a test.
func TestHarnessAttributesAreReadOnly(t *testing.T) {
	tests := []struct {
		name   string
		handle func(attrs map[string]string)
		want   string // in the reported error; "" none
	}{
		{"read", func(attrs map[string]string) { _ = attrs["device_id"] }, ""},
		{"changed", func(attrs map[string]string) { attrs["device_id"] = "d2" }, "handler attrs changed its message's Attributes"},
		{"deleted", func(attrs map[string]string) { delete(attrs, "device_id") }, "copy them with maps.Clone"},
		{"copied and changed", func(attrs map[string]string) { maps.Clone(attrs)["device_id"] = "d2" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := &errorsTB{TB: t}
			h := apptest.New(tb, func(ports.Publisher) ports.Handler {
				return ports.HandlerFunc{HandlerName: "attrs", Func: func(_ context.Context, msg ports.Message) error {
					tt.handle(msg.Attributes)
					return nil
				}}
			})
			if got := h.Send("{}", "device_id", "d1"); got != apptest.Handled {
				t.Fatalf("outcome %s, want handled", got)
			}
			errs := tb.reported()
			switch {
			case tt.want == "" && len(errs) > 0:
				t.Fatalf("reported %q, want nothing", errs)
			case tt.want != "" && (len(errs) != 1 || !strings.Contains(errs[0], tt.want)):
				t.Fatalf("reported %q, want one error containing %q", errs, tt.want)
			}
		})
	}
}
