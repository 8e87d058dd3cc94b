package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/load"
)

// A handler bound to a RabbitMQ queue: every message is handled and acked
// (the runtime settles RabbitMQ messages through the subscriber's
// transport.Settler), bad input goes to the poison target with its reason,
// and after SIGTERM nothing is left in the queue.
func TestRabbitMQHandler(t *testing.T) {
	url := integration.RabbitMQURL(t)
	ch := integration.RabbitMQChannel(t, url)
	run := load.NewRunID()
	work, sink, poison, exchange := "hx-cmd-"+run+"-work", "hx-cmd-"+run+"-sink", "hx-cmd-"+run+"-poison", "hx-cmd-"+run
	t.Cleanup(func() {
		for _, q := range []string{work, sink, poison} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(exchange, false, false)
	})
	for _, q := range []string{work, sink, poison} {
		if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}

	const good = 50
	publish := func(body string) {
		t.Helper()
		if err := ch.Publish("", work, false, false, amqp.Publishing{ContentType: "application/json", Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range good {
		publish(fmt.Sprintf(`{"device_id":"d-%d","readings":{"temperature":100}}`, i))
	}
	publish(`{"device_id":"x","readings":{"temperature":"hot"}}`)

	config := fmt.Sprintf(`service: hx-cmd-%[1]s
demo:
  enabled: false
poison:
  transport: rabbitmq
  topic: poison
  options:
    exchange: %[2]s
transports:
  rabbitmq:
    url: %[3]s
    exchanges:
      - {name: %[2]s, type: direct, durable: false}
    queues:
      - {name: %[4]s, type: classic, durable: false}
      - {name: %[5]s, type: classic, durable: false}
      - {name: %[6]s, type: classic, durable: false}
    bindings:
      - {exchange: %[2]s, queue: %[5]s, routing_key: AlertRaised}
      - {exchange: %[2]s, queue: %[6]s, routing_key: poison}
handlers:
  telemetry:
    transport: rabbitmq
    topic: %[4]s
    concurrency: 8
  device-status:
    transport: memory
    topic: status
events:
  AlertRaised:
    transport: rabbitmq
    topic: AlertRaised
    options:
      exchange: %[2]s
  DeviceStatusChanged:
    transport: memory
    topic: status-changes
`, run, exchange, url, work, sink, poison)
	path := filepath.Join(t.TempDir(), "hexmill.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startService(t, "HEXMILL_CONFIG="+path, "HEXMILL_RETRY_INITIAL_INTERVAL=10ms")

	alerts, err := ch.Consume(sink, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	poisoned, err := ch.Consume(poison, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	timeout := time.After(30 * time.Second)
	got, reason := 0, ""
	for got < good || reason == "" {
		select {
		case d := <-alerts:
			if !strings.Contains(string(d.Body), `"metric":"temperature"`) {
				t.Fatalf("sink got %s, not an alert", d.Body)
			}
			got++
		case d := <-poisoned:
			reason = fmt.Sprint(d.Headers["reason_poisoned"])
		case <-timeout:
			s.Dump(t, 20)
			t.Fatalf("%d of %d alerts, poison reason %q", got, good, reason)
		}
	}
	if !strings.Contains(reason, "readings") {
		t.Errorf("poison reason %q does not name the bad field", reason)
	}

	if err := s.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0", err)
	}
	q, err := ch.QueueDeclarePassive(work, false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 0 {
		t.Fatalf("%d messages back in the work queue after stop: handled messages were not acked", q.Messages)
	}
	t.Logf("sent %d good and 1 bad; %d alerts, 1 poisoned (%s); work queue empty after SIGTERM", good, got, reason)
}
