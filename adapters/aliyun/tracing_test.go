package aliyun_test

import (
	"context"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/aliyun"
	"github.com/hexmill/hexmill/adapters/rabbitmq"
	"github.com/hexmill/hexmill/app"
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

	cfg := app.DefaultConfig()
	cfg.Service = "hx-trace-amqp1"
	cfg.HTTPAddr = "off"
	off := false
	cfg.Demo.Enabled = &off
	cfg.DrainTimeout = 5 * time.Second
	cfg.Transports.Aliyun = aliyun.ConsumerConfig(t, addr, queue)
	cfg.Transports.RabbitMQ.URL = rabbitmq.URL("amqp://guest:guest@" + addr + "/")
	cfg.Transports.RabbitMQ.Queues = []rabbitmq.QueueConfig{{Name: alerts, Type: "classic"}}
	cfg.Handlers = map[string]app.Binding{
		"telemetry":     {Transport: app.TransportAliyun, Concurrency: 4},
		"device-status": {Transport: app.TransportMemory, Topic: "status", Concurrency: 1},
	}
	cfg.Events = map[string]app.EventBinding{
		"AlertRaised":         {Transport: app.TransportRabbitMQ, Topic: alerts},
		"DeviceStatusChanged": {Transport: app.TransportMemory, Topic: "status-changes"},
	}

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	svc := app.New(cfg, fx.Supply(fx.Annotate(tp, fx.As(new(trace.TracerProvider)))), fx.NopLogger)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })

	const traceID, parentID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	p := aliyun.NewPusher(t, addr)
	if err := p.Push(queue, "/a1b2/dev-1/user/telemetry", "m-1", []byte(`{"device_id":"dev-1","readings":{"temperature":100}}`),
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
