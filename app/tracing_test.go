package app_test

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/testservice"
)

// A reading published over MQTT with a traceparent is consumed, handled
// and its AlertRaised published in that trace: the spans consume, handle
// and send are parent and child, and the event read from RabbitMQ carries
// the trace. A reading the handler refuses ends poisoned, with the reason
// on its handler span and the trace on the poisoned message.
func TestTracingMQTTToRabbitMQ(t *testing.T) {
	if testing.Short() {
		t.Skip("needs brokers")
	}
	mqttURL, amqpURL := integration.MQTTURL(t), integration.RabbitMQURL(t)
	ch := integration.RabbitMQChannel(t, amqpURL)
	run := watermill.NewShortUUID()
	exchange, alerts, poison := "hx-trace-"+run, "hx-trace-"+run+"-alerts", "hx-trace-"+run+"-poison"
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(alerts, false, false, false)
		_, _ = ch.QueueDelete(poison, false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
	})

	topic := "hx-trace/" + run + "/telemetry"
	config := fmt.Sprintf(`service: hx-trace-%[1]s
http_addr: "off"
drain_timeout: 5s
poison:
  transport: rabbitmq
  topic: poison
  options: {exchange: %[2]s}
transports:
  mqtt:
    servers: [%[3]s]
  rabbitmq:
    url: %[4]s
    exchanges: [{name: %[2]s, type: direct}]
    queues: [{name: %[5]s, type: classic}, {name: %[6]s, type: classic}]
    bindings:
      - {exchange: %[2]s, queue: %[5]s, routing_key: AlertRaised}
      - {exchange: %[2]s, queue: %[6]s, routing_key: poison}
handlers:
  telemetry: {transport: mqtt, topic: %[7]s, group: g, concurrency: 4}
events:
  AlertRaised: {transport: rabbitmq, topic: AlertRaised, options: {exchange: %[2]s}}
domain:
  thresholds: {temperature: 80}
`, run, exchange, mqttURL, amqpURL, alerts, poison, topic)
	path := filepath.Join(t.TempDir(), "service.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	fxApp := app.New(testservice.Service(), app.Env{"HEXMILL_CONFIG": path},
		fx.Supply(fx.Annotate(tp, fx.As(new(trace.TracerProvider)))), fx.NopLogger)
	if err := fxApp.Err(); err != nil {
		t.Fatal(err)
	}
	startCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := fxApp.Start(startCtx); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			if err := fxApp.Stop(context.Background()); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(stop)

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	mqttPublish(t, mqttURL, topic, `{"device_id":"d-1","readings":{"temperature":100}}`,
		"traceparent", "00-"+traceID+"-"+parentID+"-01")
	mqttPublish(t, mqttURL, topic, `{"device_id":"d-2","readings":{"temperature":"hot"}}`)

	alert := consumeOne(t, ch, alerts)
	if got := traceIDOf(t, alert.Headers); got != traceID {
		t.Fatalf("AlertRaised carries trace %s, want the reading's %s", got, traceID)
	}
	poisoned := consumeOne(t, ch, poison)
	poisonTrace := traceIDOf(t, poisoned.Headers)
	if poisonTrace == traceID {
		t.Fatal("the poisoned reading, sent without a trace, joined the other reading's trace")
	}
	stop() // ends the spans still open and flushes them

	byName := map[string]sdktrace.ReadOnlySpan{}
	var poisonHandle sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		switch s.SpanContext().TraceID().String() {
		case traceID:
			byName[s.Name()] = s
		case poisonTrace:
			if s.Name() == "handle telemetry" {
				poisonHandle = s
			}
		}
	}
	process, handle, send := byName["process "+topic], byName["handle telemetry"], byName["send AlertRaised"]
	if process == nil || handle == nil || send == nil {
		t.Fatalf("spans in the reading's trace: %v; want process, handle and send", slices.Collect(maps.Keys(byName)))
	}
	if process.Parent().SpanID().String() != parentID || !process.Parent().IsRemote() {
		t.Errorf("consumer span's parent %s, want the producer's %s", process.Parent().SpanID(), parentID)
	}
	if process.SpanKind() != trace.SpanKindConsumer || send.SpanKind() != trace.SpanKindProducer {
		t.Errorf("span kinds: process %s, send %s", process.SpanKind(), send.SpanKind())
	}
	if handle.Parent().SpanID() != process.SpanContext().SpanID() || send.Parent().SpanID() != handle.SpanContext().SpanID() {
		t.Error("spans are not nested process > handle > send")
	}
	attrs := map[string]string{}
	for _, a := range process.Attributes() {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	for k, want := range map[string]string{"messaging.system": "mqtt", "messaging.destination.name": topic, "messaging.consumer.group.name": "g"} {
		if attrs[k] != want {
			t.Errorf("consumer span %s = %q, want %q", k, attrs[k], want)
		}
	}
	if attrs["messaging.message.id"] == "" {
		t.Error("consumer span has no messaging.message.id")
	}
	for _, a := range append(append(process.Attributes(), handle.Attributes()...), send.Attributes()...) {
		if strings.Contains(a.Value.Emit(), "temperature") {
			t.Errorf("span attribute %s carries the payload: %s", a.Key, a.Value.Emit())
		}
	}
	if poisonHandle == nil {
		t.Fatal("no handler span for the poisoned reading")
	}
	if st := poisonHandle.Status(); st.Code != codes.Error || !strings.Contains(st.Description, "readings") {
		t.Errorf("poisoned handler span status %v %q, want an error naming the bad field", st.Code, st.Description)
	}
}

// mqttPublish publishes payload at QoS 1 with user properties kv (key,
// value, ...).
func mqttPublish(t *testing.T, brokerURL, topic, payload string, kv ...string) {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		ClientConfig: paho.ClientConfig{ClientID: "hx-trace-pub-" + watermill.NewShortUUID()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cm.Disconnect(context.Background()) }()
	if err := cm.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	p := &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload), Properties: &paho.PublishProperties{}}
	for i := 0; i+1 < len(kv); i += 2 {
		p.Properties.User.Add(kv[i], kv[i+1])
	}
	if _, err := cm.Publish(ctx, p); err != nil {
		t.Fatal(err)
	}
}

func consumeOne(t *testing.T, ch *amqp.Channel, queue string) amqp.Delivery {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return d
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing in %s after 30s", queue)
	return amqp.Delivery{}
}

// traceIDOf is the trace ID of a W3C traceparent header.
func traceIDOf(t *testing.T, headers amqp.Table) string {
	t.Helper()
	tp, _ := headers["traceparent"].(string)
	parts := strings.Split(tp, "-")
	if len(parts) != 4 {
		t.Fatalf("traceparent header %q (headers %v)", tp, headers)
	}
	return parts[1]
}
