package runtime_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

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
