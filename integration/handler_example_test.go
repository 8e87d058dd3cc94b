package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/eclipse/paho.golang/paho"

	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/testservice"
)

// TestTelemetryHandlerAgainstBrokers is the README's example of a handler
// test against real brokers: the service (here the framework's test
// service; a fork's test runs its own) runs inside the test with the
// telemetry handler bound to MQTT and AlertRaised to RabbitMQ. The brokers
// come from HEXMILL_TEST_* or, without them, from the containers this
// package's TestMain (integration.WithBrokers) shares between its tests;
// the test's own names keep it apart from the others.
func TestTelemetryHandlerAgainstBrokers(t *testing.T) {
	mqttURL, rabbitURL := integration.MQTTURL(t), integration.RabbitMQURL(t)
	name := "example-" + strings.ToLower(watermill.NewShortUUID())

	path := filepath.Join(t.TempDir(), "hexmill.yaml")
	conf := fmt.Sprintf(`service: %[1]s
http_addr: 127.0.0.1:0
transports:
  mqtt: {servers: [%[2]s], client_id: "%[1]s-{conn}-{n}"}
  rabbitmq:
    url: %[3]s
    exchanges: [{name: %[1]s, type: topic, auto_delete: true}]
    queues: [{name: %[1]s.poison, type: classic, durable: false, expires: 1m}]
handlers:
  telemetry: {transport: mqtt, topic: %[1]s/+/telemetry, topic_params: "%[1]s/{device_id}/telemetry"}
events:
  AlertRaised: {transport: rabbitmq, topic: alert.raised, options: {exchange: %[1]s}}
poison: {transport: rabbitmq, topic: %[1]s.poison}
domain:
  thresholds: {temperature: 80}
`, name, mqttURL, rabbitURL)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := app.New(testservice.Service(), app.Env{"HEXMILL_CONFIG": path})
	if err := svc.Err(); err != nil { // the configuration, checked before anything connects
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := svc.Start(ctx); err != nil { // returns once the handlers consume
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })

	// A queue of the test's on the events exchange.
	ch := integration.RabbitMQChannel(t, rabbitURL)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "alert.#", name, false, nil); err != nil {
		t.Fatal(err)
	}
	alerts, err := ch.ConsumeWithContext(ctx, q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}

	// A reading over the temperature threshold (80) raises an alert.
	pub := rawMQTTClient(t, ctx, strings.TrimPrefix(mqttURL, "mqtt://"), name+"-device")
	if _, err := pub.Publish(ctx, &paho.Publish{
		Topic: name + "/dev-1/telemetry", QoS: 1, Payload: []byte(`{"readings":{"temperature":91}}`),
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-alerts:
		var alert struct {
			DeviceID string  `json:"device_id"`
			Metric   string  `json:"metric"`
			Value    float64 `json:"value"`
		}
		if err := json.Unmarshal(d.Body, &alert); err != nil || d.Type != "AlertRaised" ||
			alert.DeviceID != "dev-1" || alert.Metric != "temperature" || alert.Value != 91 {
			t.Fatalf("got %s %s (%v), want AlertRaised for dev-1 temperature 91", d.Type, d.Body, err)
		}
	case <-ctx.Done():
		t.Fatal("no AlertRaised")
	}
}
