package aliyun_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/aliyun"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/integration/testservice"
)

// The service's runtime on this transport continues the trace a message
// pushed over AMQP 1.0 carries in its application properties: process,
// handle and send are in that trace, and the AlertRaised read from
// RabbitMQ carries it on.
func TestTracingOverAMQP1(t *testing.T) {
	addr := aliyun.SigningBroker(t)
	queue, alerts := aliyun.UniqueQueue("trace"), aliyun.UniqueQueue("trace-alerts")
	conn, err := amqp.Dial("amqp://guest:guest@" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(queue, false, false, false)
		_, _ = ch.QueueDelete(alerts, false, false, false)
	})

	c := aliyun.ConsumerConfig(t, addr, queue)
	config := fmt.Sprintf(`service: hx-trace-amqp1
http_addr: "off"
drain_timeout: 5s
poison: {transport: memory, topic: poison}
transports:
%[1]s  rabbitmq:
    url: amqp://guest:guest@%[2]s/
    queues: [{name: %[3]s, type: classic}]
handlers:
  telemetry: {transport: aliyun, concurrency: 4}
events:
  AlertRaised: {transport: rabbitmq, topic: %[3]s}
domain:
  thresholds: {temperature: 80}
`, aliyun.ServiceSection(c), addr, alerts)
	path := filepath.Join(t.TempDir(), "service.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	svc := app.New(testservice.Service(), app.Env{"HEXMILL_CONFIG": path},
		fx.Supply(fx.Annotate(tp, fx.As(new(trace.TracerProvider)))), fx.NopLogger)
	if err := svc.Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })

	const traceID, parentID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	p := aliyun.NewPusher(t, addr)
	if err := p.Push(queue, "/a1b2/dev-1/user/telemetry", "m-1", []byte(`{"device_id":"a1b2.dev-1","readings":{"temperature":100}}`),
		map[string]string{"traceparent": "00-" + traceID + "-" + parentID + "-01"}); err != nil {
		t.Fatal(err)
	}

	var alert amqp.Delivery
	for deadline := time.Now().Add(30 * time.Second); ; {
		d, ok, err := ch.Get(alerts, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			alert = d
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no AlertRaised after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	tp0, _ := alert.Headers["traceparent"].(string)
	if parts := strings.Split(tp0, "-"); len(parts) != 4 || parts[1] != traceID {
		t.Fatalf("AlertRaised traceparent %q, want trace %s", tp0, traceID)
	}
	if err := svc.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}

	got := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans.Ended() {
		if s.SpanContext().TraceID().String() == traceID {
			got[s.Name()] = s
		}
	}
	process, handle, send := got["process aliyun"], got["handle telemetry"], got["send "+alerts]
	if process == nil || handle == nil || send == nil {
		names := make([]string, 0, len(got))
		for n := range got {
			names = append(names, n)
		}
		t.Fatalf("spans in the pushed message's trace: %v; want process, handle and send", names)
	}
	if process.Parent().SpanID().String() != parentID {
		t.Errorf("consumer span's parent %s, want the pusher's %s", process.Parent().SpanID(), parentID)
	}
	for _, a := range process.Attributes() {
		if a.Key == "messaging.system" && a.Value.AsString() != "aliyun" {
			t.Errorf("messaging.system %q, want aliyun", a.Value.AsString())
		}
	}
	if handle.Parent().SpanID() != process.SpanContext().SpanID() || send.Parent().SpanID() != handle.SpanContext().SpanID() {
		t.Error("spans are not nested process > handle > send")
	}
}
