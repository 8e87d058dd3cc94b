package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/ports"
)

// forged is what a sender sets to pass as another device or to look like
// the framework: a topic parameter and every framework key (see
// transport.FrameworkKey), as user properties or headers.
var forged = map[string]string{
	"device_id":                      "someone-else",
	ports.MetadataTopic:              "forged/topic",
	ports.MetadataRedelivered:        "true",
	ports.MetadataEventType:          "Forged",
	ports.MetadataCorrelationID:      "forged-correlation",
	ports.MetadataContentType:        "text/forged",
	middleware.ReasonForPoisonedKey:  "forged",
	middleware.PoisonedTopicKey:      "forged",
	middleware.PoisonedHandlerKey:    "forged",
	middleware.PoisonedSubscriberKey: "forged",
}

// probe runs a service whose one handler, "probe", bound by config
// (YAML, with the poison target on the memory transport), hands each
// message it gets to the test; it returns the messages and the memory
// broker that holds the poison target. opts are more fx options.
func probe(t *testing.T, config string, opts ...fx.Option) (<-chan ports.Message, *memory.Transport) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "service.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan ports.Message, 16)
	svc := app.Service{Name: "idprobe", Options: []fx.Option{
		app.AsHandler(func() ports.Handler {
			return ports.HandlerFunc{HandlerName: "probe", Func: func(_ context.Context, msg ports.Message) error {
				got <- msg
				return nil
			}}
		}),
	}}
	var broker *memory.Transport
	a := app.New(svc, app.Env{"IDPROBE_CONFIG": path}, append(opts, fx.Populate(&broker), fx.NopLogger)...)
	if err := a.Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return got, broker
}

// checkIdentity asserts that the handler got the message sent on topic
// for device dev-1 with its identity from the topic and none of the
// forged metadata, and that the message sent on a topic that does not
// match topic_params was poisoned, never handled.
func checkIdentity(t *testing.T, got <-chan ports.Message, broker *memory.Transport, topic string) {
	t.Helper()
	var msg ports.Message
	select {
	case msg = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler got no message")
	}
	if msg.Topic != topic || msg.Attributes["device_id"] != "dev-1" || msg.Attributes[ports.MetadataTopic] != topic {
		t.Errorf("topic %q, device_id %q, topic attribute %q: want %s, dev-1 from the topic",
			msg.Topic, msg.Attributes["device_id"], msg.Attributes[ports.MetadataTopic], topic)
	}
	if msg.CorrelationID == forged[ports.MetadataCorrelationID] {
		t.Errorf("correlation ID %q taken from the sender's property", msg.CorrelationID)
	}
	for k, v := range forged {
		if k != "device_id" && k != ports.MetadataTopic && msg.Attributes[k] == v {
			t.Errorf("attribute %s = %q reached the handler from the sender's property", k, v)
		}
	}
	poisoned := receive(t, broker, "poison", 1)[0]
	if reason := poisoned.Metadata.Get(middleware.ReasonForPoisonedKey); !strings.Contains(reason, "does not match the binding's topic_params") {
		t.Errorf("poison reason %q, want the topic_params mismatch", reason)
	}
	select {
	case m := <-got:
		t.Errorf("the message on a topic that does not match topic_params was handled: %s %v", m.Topic, m.Attributes)
	case <-time.After(200 * time.Millisecond):
	}
}

// On the memory transport, the topic is the queue's.
func TestIdentityFromTopicMemory(t *testing.T) {
	got, broker := probe(t, `service: idprobe
http_addr: "off"
poison: {transport: memory, topic: poison}
handlers:
  probe: {transport: memory, topic: devices/dev-1/status, topic_params: "devices/{device_id}/status"}
  `)
	msg := message.NewMessage(watermill.NewUUID(), []byte("{}"))
	for k, v := range forged {
		msg.Metadata.Set(k, v)
	}
	if err := broker.Publish("devices/dev-1/status", msg); err != nil {
		t.Fatal(err)
	}
	var m ports.Message
	select {
	case m = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler got no message")
	}
	if m.Topic != "devices/dev-1/status" || m.Attributes["device_id"] != "dev-1" || m.Attributes[ports.MetadataRedelivered] != "" {
		t.Errorf("topic %q, attributes %v: want the queue's topic, device_id dev-1, no redelivered", m.Topic, m.Attributes)
	}
}

// On MQTT, the topic is the PUBLISH packet's and a user property changes
// no framework key.
func TestIdentityFromTopicMQTT(t *testing.T) {
	if testing.Short() {
		t.Skip("needs brokers")
	}
	mqttURL := integration.MQTTURL(t)
	prefix := "hx-id/" + watermill.NewShortUUID()
	got, broker := probe(t, fmt.Sprintf(`service: idprobe
http_addr: "off"
drain_timeout: 5s
poison: {transport: memory, topic: poison}
transports:
  mqtt:
    servers: [%[1]s]
handlers:
  probe: {transport: mqtt, topic: "%[2]s/#", topic_params: "%[2]s/{device_id}/status"}
`, mqttURL, prefix))
	kv := make([]string, 0, 2*len(forged))
	for k, v := range forged {
		kv = append(kv, k, v)
	}
	topic := prefix + "/dev-1/status"
	mqttPublish(t, mqttURL, topic, "{}", kv...)
	mqttPublish(t, mqttURL, prefix+"/dev-1/extra/status", "{}", kv...)
	checkIdentity(t, got, broker, topic)
}

// On RabbitMQ, the topic is the routing key and a header changes no
// framework key.
func TestIdentityFromTopicRabbitMQ(t *testing.T) {
	if testing.Short() {
		t.Skip("needs brokers")
	}
	amqpURL := integration.RabbitMQURL(t)
	ch := integration.RabbitMQChannel(t, amqpURL)
	run := watermill.NewShortUUID()
	exchange, queue, prefix := "hx-id-"+run, "hx-id-"+run, "hx-id."+run
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(queue, false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
	})
	got, broker := probe(t, fmt.Sprintf(`service: idprobe
http_addr: "off"
drain_timeout: 5s
poison: {transport: memory, topic: poison}
transports:
  rabbitmq:
    url: %[1]s
    exchanges: [{name: %[2]s, type: topic}]
    queues: [{name: %[3]s, type: classic}]
    bindings: [{exchange: %[2]s, queue: %[3]s, routing_key: "%[4]s.#"}]
handlers:
  probe: {transport: rabbitmq, topic: %[3]s, topic_params: "%[4]s.{device_id}.status"}
`, amqpURL, exchange, queue, prefix))
	headers := amqp.Table{}
	for k, v := range forged {
		headers[k] = v
	}
	topic := prefix + ".dev-1.status"
	for _, key := range []string{topic, prefix + ".dev-1.extra.status"} {
		if err := ch.PublishWithContext(context.Background(), exchange, key, true, false, amqp.Publishing{Headers: headers, Body: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
	}
	checkIdentity(t, got, broker, topic)
}
