package runtime

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/hexmill/hexmill/app/config"
)

// The chain's order is the runtime's contract (see links): a handler's
// messages pass these links, outermost first. The docs point here. Each
// case turns parts off, and what is off must leave the rest in order.
func TestChainOrder(t *testing.T) {
	registry := prometheus.NewRegistry()
	metrics, err := newHandlerMetrics(registry, "test")
	if err != nil {
		t.Fatal(err)
	}
	tracer := newTracing(sdktrace.NewTracerProvider(), "")
	service := func(handler string, next message.HandlerFunc) message.HandlerFunc { return next }

	tests := []struct {
		name    string
		binding config.Binding
		tracing *tracing
		metrics *handlerMetrics
		extra   []Middleware
		want    []string
	}{
		{
			name:    "everything on",
			binding: config.Binding{Transport: config.TransportMemory, Topic: "in", MessageID: config.MessageIDContent, Idempotent: true},
			tracing: tracer, metrics: metrics, extra: []Middleware{service, service},
			want: []string{"delivery", "content_id", "delivery_span", "failure_log", "metrics", "inflight",
				"handler_span", "poison", "retry", "dedup", "recoverer", "service", "service"},
		},
		{
			name:    "defaults: no tracing, no registry, transport IDs, not idempotent",
			binding: config.Binding{Transport: config.TransportMemory, Topic: "in"},
			want:    []string{"delivery", "failure_log", "inflight", "poison", "retry", "recoverer"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain := links(chainParams{
				handler:     "h",
				binding:     tt.binding,
				tracing:     tt.tracing,
				metrics:     tt.metrics,
				inflight:    &inflight{},
				abort:       context.Background(),
				logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
				retry:       config.RetryConfig{Multiplier: 1},
				middlewares: tt.extra,
			})
			var got []string
			for _, l := range chain {
				if l.wrap != nil {
					got = append(got, l.name)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("chain, outermost first:\n got  %v\n want %v", got, tt.want)
			}
		})
	}
}

// build runs the links in their order: the first is outermost.
func TestBuildOrder(t *testing.T) {
	var ran []string
	mark := func(name string) link {
		return link{name, func(h message.HandlerFunc) message.HandlerFunc {
			return func(msg *message.Message) ([]*message.Message, error) {
				ran = append(ran, name)
				return h(msg)
			}
		}}
	}
	h := build([]link{mark("outer"), {name: "off"}, mark("inner")}, func(*message.Message) ([]*message.Message, error) {
		ran = append(ran, "handler")
		return nil, nil
	})
	if _, err := h(message.NewMessage("1", nil)); err != nil {
		t.Fatal(err)
	}
	if want := []string{"outer", "inner", "handler"}; !slices.Equal(ran, want) {
		t.Errorf("ran %v, want %v", ran, want)
	}
}
