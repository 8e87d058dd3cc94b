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
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/aliyun"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/integration/testservice"
)

// No single message pushed over AMQP 1.0 takes a connection down or
// stalls the others (issue 23; app's TestOneMessageCannotTakeAConnectionDown
// for MQTT and RabbitMQ): a 3 MiB reading is poisoned too_large with its
// first 4 KiB, unhandled (the receiver link announced max_message_bytes
// plus headroom; RabbitMQ's plugin sends it anyway and the link survives);
// a 900 KiB reading whose number does not fit a float64 is poisoned with
// its decoder's error cut to 1 KiB (RabbitMQ would close the poison
// publisher's connection on a 900 KiB header); a good reading pushed
// after them raises its alert.
func TestOneMessageCannotTakeAConnectionDownAMQP1(t *testing.T) {
	addr := aliyun.SigningBroker(t)
	queue, alerts, poison := aliyun.UniqueQueue("bounds"), aliyun.UniqueQueue("bounds-alerts"), aliyun.UniqueQueue("bounds-poison")
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
		for _, q := range []string{queue, alerts, poison} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
	})

	c := aliyun.ConsumerConfig(t, addr, queue)
	config := fmt.Sprintf(`service: hx-bounds-amqp1
http_addr: "off"
drain_timeout: 5s
poison: {transport: rabbitmq, topic: %[4]s}
transports:
%[1]s  rabbitmq:
    url: amqp://guest:guest@%[2]s/
    queues: [{name: %[3]s, type: classic}, {name: %[4]s, type: classic}]
handlers:
  telemetry: {transport: aliyun, concurrency: 4}
events:
  AlertRaised: {transport: rabbitmq, topic: %[3]s}
domain:
  thresholds: {temperature: 80}
`, aliyun.ServiceSection(c), addr, alerts, poison)
	path := filepath.Join(t.TempDir(), "service.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := app.New(testservice.Service(), app.Env{"HEXMILL_CONFIG": path}, fx.NopLogger)
	if err := svc.Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			if err := svc.Stop(context.Background()); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(stop)

	// Each device reports for itself: its payload's device_id is the
	// topic's (productKey.deviceName), as the sample requires.
	reading := func(device string, size int) []byte {
		head := `{"device_id":"a1b2.` + device + `","readings":{"temperature":`
		return []byte(head + strings.Repeat("9", size-len(head)-2) + "}}")
	}
	p := aliyun.NewPusher(t, addr)
	for i, r := range []struct {
		device  string
		payload []byte
	}{
		{"too-large", reading("too-large", 3<<20)},
		{"number", reading("number", 900<<10)},
		{"good", []byte(`{"device_id":"a1b2.good","readings":{"temperature":100}}`)},
	} {
		if err := p.Push(queue, "/a1b2/"+r.device+"/user/telemetry", fmt.Sprintf("m-%d", i), r.payload, nil); err != nil {
			t.Fatal(err)
		}
	}

	get := func(q string) amqp.Delivery {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			d, ok, err := ch.Get(q, true)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				return d
			}
		}
		t.Fatalf("nothing in %s after 30s", q)
		return amqp.Delivery{}
	}
	if alert := get(alerts); !strings.Contains(string(alert.Body), `"a1b2.good"`) {
		t.Fatalf("alert %s, want the good reading's", alert.Body)
	}
	got := map[string]amqp.Delivery{}
	for range 2 {
		d := get(poison)
		device, _, _ := strings.Cut(strings.TrimPrefix(string(d.Body), `{"device_id":"a1b2.`), `"`)
		got[device] = d
	}
	stop()
	if q, err := ch.QueueDeclarePassive(poison, false, false, false, false, nil); err != nil || q.Messages != 0 {
		t.Fatalf("poison queue: %d more messages (%v), want none", q.Messages, err)
	}
	tooLarge, number := got["too-large"], got["number"]
	if r, _ := tooLarge.Headers["reason_poisoned"].(string); !strings.HasPrefix(r, "too_large:") || len(tooLarge.Body) != transport.PoisonPayloadBytes {
		t.Errorf("too large reading poisoned with reason %q and %d bytes, want too_large and the first %d", r, len(tooLarge.Body), transport.PoisonPayloadBytes)
	}
	if r, _ := number.Headers["reason_poisoned"].(string); !strings.Contains(r, "cannot unmarshal number 9999") || len(r) > transport.MetadataValueBytes {
		t.Errorf("unparsable reading poisoned with a reason of %d bytes (%.60q...), want the decoder's error in at most %d", len(r), r, transport.MetadataValueBytes)
	}
}

// A pushed reading whose alert can never be published is handed back
// (released), redelivered after the retry backoff and poisoned with
// reason handed_back_too_often once max_handbacks is reached (app's
// TestHandedBackTooOftenOnBrokers for MQTT and RabbitMQ).
func TestHandedBackTooOftenAMQP1(t *testing.T) {
	addr := aliyun.SigningBroker(t)
	queue, poison, exchange := aliyun.UniqueQueue("hb"), aliyun.UniqueQueue("hb-poison"), aliyun.UniqueQueue("hb-nowhere")
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
		_, _ = ch.QueueDelete(poison, false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
	})
	c := aliyun.ConsumerConfig(t, addr, queue)
	const initial = 200 * time.Millisecond
	config := fmt.Sprintf(`service: hx-hb-amqp1
http_addr: "off"
drain_timeout: 5s
retry: {max_retries: 0, initial_interval: %[6]s, max_interval: 2s, multiplier: 2}
poison: {transport: rabbitmq, topic: %[4]s}
transports:
%[1]s  rabbitmq:
    url: amqp://guest:guest@%[2]s/
    exchanges: [{name: %[3]s, type: topic}]
    queues: [{name: %[4]s, type: classic}]
handlers:
  telemetry: {transport: aliyun, concurrency: 4, max_handbacks: %[5]d}
events:
  AlertRaised: {transport: rabbitmq, topic: AlertRaised, options: {exchange: %[3]s}}
domain:
  thresholds: {temperature: 80}
`, aliyun.ServiceSection(c), addr, exchange, poison, 2, initial)
	path := filepath.Join(t.TempDir(), "service.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := app.New(testservice.Service(), app.Env{"HEXMILL_CONFIG": path}, fx.NopLogger)
	if err := svc.Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })

	payload := `{"device_id":"a1b2.d-1","readings":{"temperature":100}}`
	sent := time.Now()
	if err := aliyun.NewPusher(t, addr).Push(queue, "/a1b2/d-1/user/telemetry", "m-1", []byte(payload), nil); err != nil {
		t.Fatal(err)
	}
	var d amqp.Delivery
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var ok bool
		if d, ok, err = ch.Get(poison, true); err != nil {
			t.Fatal(err)
		} else if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing poisoned after 30s: the reading is handed back for ever")
		}
	}
	took := time.Since(sent)
	if r, _ := d.Headers["reason_poisoned"].(string); !strings.HasPrefix(r, "handed_back_too_often: handed back 2 times") {
		t.Fatalf("poisoned with reason %q, want handed_back_too_often after 2", r)
	}
	if want := 3 * initial; took < want {
		t.Fatalf("poisoned %s after it was pushed, want the backoff of two hand-backs (%s) or more", took, want)
	}
}
