package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/testservice"
	"github.com/hexmill/hexmill/ports"
)

// startFromFile starts svc configured by the YAML conf and stops it when
// the test ends.
func startFromFile(t *testing.T, svc app.Service, conf string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "service.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	a := app.New(svc, app.Env{config.EnvConfigFile(svc.Name): path}, fx.NopLogger)
	if err := a.Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
}

// A reading whose alert can never be published (its exchange routes it
// nowhere) is handed back, redelivered after the retry backoff (on
// RabbitMQ a requeue is not instant any more), and poisoned with reason
// handed_back_too_often once max_handbacks is reached; without the bound
// it went round for ever.
func TestHandedBackTooOftenOnBrokers(t *testing.T) {
	if testing.Short() {
		t.Skip("needs brokers")
	}
	const initial = 200 * time.Millisecond
	for _, source := range []string{"mqtt", "rabbitmq"} {
		t.Run(source, func(t *testing.T) {
			mqttURL, amqpURL := integration.MQTTURL(t), integration.RabbitMQURL(t)
			ch := integration.RabbitMQChannel(t, amqpURL)
			run := strings.ToLower(watermill.NewShortUUID())
			in, poison, exchange := "hx-hb-"+run+"-in", "hx-hb-"+run+"-poison", "hx-hb-"+run+"-nowhere"
			t.Cleanup(func() {
				_, _ = ch.QueueDelete(in, false, false, false)
				_, _ = ch.QueueDelete(poison, false, false, false)
				_ = ch.ExchangeDelete(exchange, false, false)
			})
			topic := "hx-hb/" + run + "/telemetry"
			handler := fmt.Sprintf("{transport: mqtt, topic: %s, group: g, max_handbacks: 2}", topic)
			if source == "rabbitmq" {
				handler = fmt.Sprintf("{transport: rabbitmq, topic: %s, max_handbacks: 2}", in)
			}
			startFromFile(t, testservice.Service(), fmt.Sprintf(`service: hx-hb-%[1]s
http_addr: "off"
drain_timeout: 5s
retry: {max_retries: 0, initial_interval: %[7]s, max_interval: 2s, multiplier: 2}
poison: {transport: rabbitmq, topic: %[5]s}
transports:
  mqtt: {servers: [%[2]s], client_id: "hx-hb-%[1]s-{conn}-{n}"}
  rabbitmq:
    url: %[3]s
    exchanges: [{name: %[6]s, type: topic}]
    queues: [{name: %[4]s, type: classic}, {name: %[5]s, type: classic}]
handlers:
  telemetry: %[8]s
events:
  AlertRaised: {transport: rabbitmq, topic: AlertRaised, options: {exchange: %[6]s}}
domain:
  thresholds: {temperature: 80}
`, run, mqttURL, amqpURL, in, poison, exchange, initial, handler))

			payload := `{"device_id":"d-1","readings":{"temperature":100}}`
			sent := time.Now()
			if source == "mqtt" {
				mqttPublish(t, mqttURL, topic, payload)
			} else if err := ch.Publish("", in, false, false, amqp.Publishing{Body: []byte(payload)}); err != nil {
				t.Fatal(err)
			}
			d := consumeOne(t, ch, poison)
			took := time.Since(sent)
			if r, _ := d.Headers["reason_poisoned"].(string); !strings.HasPrefix(r, "handed_back_too_often: handed back 2 times") {
				t.Fatalf("poisoned with reason %q, want handed_back_too_often after 2", r)
			}
			if string(d.Body) != payload {
				t.Fatalf("poisoned %q, want the reading", d.Body)
			}
			if want := initial + 2*initial; took < want {
				t.Fatalf("poisoned %s after it was sent, want the backoff of two hand-backs (%s) or more", took, want)
			}
		})
	}
}

// handler_timeout cancels a handler attempt that hangs, which is retried:
// on MQTT, whose acks go out in arrival order and whose broker sends no
// more than receive_maximum unacked messages, one hung handler no longer
// stalls the subscription for ever.
func TestHandlerTimeoutUnstallsMQTT(t *testing.T) {
	if testing.Short() {
		t.Skip("needs brokers")
	}
	m := integration.StartMosquitto(t, "")
	run := strings.ToLower(watermill.NewShortUUID())
	topic := "hx-timeout/" + run
	var attempts atomic.Int32
	var mu sync.Mutex
	handled := map[string]bool{}
	all := make(chan struct{})
	h := ports.HandlerFunc{HandlerName: "slow", Func: func(ctx context.Context, msg ports.Message) error {
		if string(msg.Payload) == "hang" && attempts.Add(1) == 1 {
			<-ctx.Done() // hangs until its context ends
			return ctx.Err()
		}
		mu.Lock()
		defer mu.Unlock()
		handled[string(msg.Payload)] = true
		if len(handled) == 4 {
			close(all)
		}
		return nil
	}}
	svc := app.Service{Name: "hx-timeout", Options: []fx.Option{app.AsHandler(func() ports.Handler { return h })}}
	startFromFile(t, svc, fmt.Sprintf(`service: hx-timeout-%[1]s
http_addr: "off"
drain_timeout: 2s
retry: {max_retries: 3, initial_interval: 10ms, max_interval: 100ms, multiplier: 2}
poison: {transport: memory, topic: poison}
transports:
  mqtt: {servers: [%[2]s], receive_maximum: 2}
handlers:
  slow: {transport: mqtt, topic: %[3]s, concurrency: 2, handler_timeout: 200ms}
`, run, m.URL(), topic))
	for _, p := range []string{"hang", "m1", "m2", "m3"} {
		mqttPublish(t, m.URL(), topic, p)
	}
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("handled %v; want hang (on its second attempt), m1, m2, m3", handled)
	}
}
