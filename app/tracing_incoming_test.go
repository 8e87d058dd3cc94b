package app_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/integration"
)

// tracing.incoming: link, set in the configuration file, over MQTT: the
// delivery of a reading that carries a sender's traceparent starts a new
// trace with a link to the sender's span, and the handler's context is in
// that new trace, not the sender's.
func TestTracingIncomingLinkMQTT(t *testing.T) {
	if testing.Short() {
		t.Skip("needs brokers")
	}
	mqttURL := integration.MQTTURL(t)
	topic := "hx-link/" + watermill.NewShortUUID() + "/status"
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	got, _ := probe(t, fmt.Sprintf(`service: idprobe
http_addr: "off"
drain_timeout: 5s
poison: {transport: memory, topic: poison}
tracing: {incoming: link}
transports:
  mqtt:
    servers: [%[1]s]
handlers:
  probe: {transport: mqtt, topic: "%[2]s"}
`, mqttURL, topic), fx.Supply(fx.Annotate(tp, fx.As(new(trace.TracerProvider)))))

	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	mqttPublish(t, mqttURL, topic, "{}", "traceparent", "00-"+traceID+"-"+spanID+"-01")
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler got no message")
	}
	var process sdktrace.ReadOnlySpan
	deadline := time.Now().Add(10 * time.Second)
	for process == nil && time.Now().Before(deadline) {
		for _, s := range spans.Ended() {
			if s.Name() == "process "+topic {
				process = s
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if process == nil {
		t.Fatal("no process span")
	}
	if process.SpanContext().TraceID().String() == traceID || process.Parent().IsValid() {
		t.Errorf("process span in trace %s with parent %s: want a new trace, no parent", process.SpanContext().TraceID(), process.Parent().SpanID())
	}
	links := process.Links()
	if len(links) != 1 || links[0].SpanContext.TraceID().String() != traceID || links[0].SpanContext.SpanID().String() != spanID {
		t.Errorf("links %v, want one to the sender's span %s/%s", links, traceID, spanID)
	}
}
