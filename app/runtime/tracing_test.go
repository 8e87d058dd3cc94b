package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/ports"
)

// A handler that fails and then succeeds has one handler span, with a
// retry event per failure, and ends well; without a trace on the message
// the delivery starts a new one.
func TestTracingRetriesAreEvents(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	broker := newBroker(t)
	var calls atomic.Int32
	h := ports.HandlerFunc{HandlerName: "test", Func: func(context.Context, ports.Message) error {
		if calls.Add(1) <= 2 {
			return errors.New("not yet")
		}
		return nil
	}}
	rt, err := runtime.New(runtime.Params{
		Config: testConfig(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Transports: []runtime.Opener{memoryOpener(broker)}, Handlers: []ports.Handler{h},
		TracerProvider: tp,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	publish(t, broker, inTopic, "m-1", `{}`)
	waitFor(t, "the third attempt", func() bool { return calls.Load() == 3 })
	if err := rt.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	var handle, process sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		switch s.Name() {
		case "handle test":
			handle = s
		case "process " + inTopic:
			process = s
		}
	}
	if handle == nil || process == nil {
		t.Fatalf("spans %d, want process and handle", len(spans.Ended()))
	}
	if process.Parent().IsValid() {
		t.Errorf("a message without a trace continued %s, want a new trace", process.Parent().TraceID())
	}
	var retries int
	for _, e := range handle.Events() {
		if e.Name == "retry" {
			retries++
		}
	}
	if retries != 2 || handle.Status().Code == codes.Error {
		t.Errorf("handler span: %d retry events, status %v; want 2 and not an error", retries, handle.Status())
	}
}

// tracing.incoming decides what a message's own traceparent does. The
// service samples no new trace here (ratio 0), and the sender's
// traceparent says "sampled": with parent the delivery follows the
// sender, so it is recorded in the sender's trace; with link it is a new
// trace, which the service's sampler drops, and, sampled, links to the
// sender's span; with ignore it is a new trace with no link.
func TestTracingIncoming(t *testing.T) {
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tests := []struct {
		incoming  string
		sampleNew bool
		recorded  bool // the process span is recorded
		parent    bool // in the sender's trace
		link      bool // links to the sender's span
	}{
		{incoming: "", recorded: true, parent: true},
		{incoming: config.IncomingParent, recorded: true, parent: true},
		{incoming: config.IncomingLink, recorded: false},
		{incoming: config.IncomingLink, sampleNew: true, recorded: true, link: true},
		{incoming: config.IncomingIgnore, recorded: false},
		{incoming: config.IncomingIgnore, sampleNew: true, recorded: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/sample_new=%v", tt.incoming, tt.sampleNew), func(t *testing.T) {
			ratio := 0.0
			if tt.sampleNew {
				ratio = 1
			}
			spans := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans),
				sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))))
			t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			broker := newBroker(t)
			handled := make(chan struct{}, 1)
			h := ports.HandlerFunc{HandlerName: "test", Func: func(context.Context, ports.Message) error {
				handled <- struct{}{}
				return nil
			}}
			cfg := testConfig()
			cfg.Tracing.Incoming = tt.incoming
			rt, err := runtime.New(runtime.Params{
				Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
				Transports: []runtime.Opener{memoryOpener(broker)}, Handlers: []ports.Handler{h},
				TracerProvider: tp,
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := rt.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			msg := message.NewMessage("m-1", []byte("{}"))
			msg.Metadata.Set("traceparent", "00-"+traceID+"-"+spanID+"-01")
			if err := broker.Publish(inTopic, msg); err != nil {
				t.Fatal(err)
			}
			<-handled
			if err := rt.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			var process sdktrace.ReadOnlySpan
			for _, s := range spans.Ended() {
				if s.Name() == "process "+inTopic {
					process = s
				}
			}
			if (process != nil) != tt.recorded {
				t.Fatalf("process span recorded: %v, want %v", process != nil, tt.recorded)
			}
			if process == nil {
				return
			}
			inSenders := process.SpanContext().TraceID().String() == traceID
			if inSenders != tt.parent || (tt.parent && process.Parent().SpanID().String() != spanID) {
				t.Errorf("trace %s, parent %s: in the sender's trace %v, want %v", process.SpanContext().TraceID(), process.Parent().SpanID(), inSenders, tt.parent)
			}
			linked := len(process.Links()) == 1 && process.Links()[0].SpanContext.TraceID().String() == traceID &&
				process.Links()[0].SpanContext.SpanID().String() == spanID
			if linked != tt.link || (!tt.link && len(process.Links()) != 0) {
				t.Errorf("links %v, want a link to the sender's span: %v", process.Links(), tt.link)
			}
		})
	}
}
