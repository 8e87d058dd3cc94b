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
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/testservice"
)

// reading is a telemetry payload of about size bytes whose only number
// has so many digits that it does not fit a float64: it never decodes,
// and the decoder's error quotes the number.
func reading(device string, size int) string {
	head := `{"device_id":"` + device + `","readings":{"temperature":`
	return head + strings.Repeat("9", max(size-len(head)-2, 1)) + "}}"
}

// No single message, of any size or content, takes a connection down or
// stalls the others (issue 23). From MQTT and from RabbitMQ, with the
// default max_message_bytes (1 MiB) and the poison target on RabbitMQ:
//   - a reading above the limit is poisoned with reason too_large and
//     the first 4 KiB of its payload, never decoded nor handled (on MQTT a
//     packet above the Maximum Packet Size the subscriber announced is not
//     even sent by the broker);
//   - a reading under the limit whose number does not fit a float64 is
//     poisoned with its decoder's error, which quotes the number, cut to
//     1 KiB: before, the 900 KiB header made RabbitMQ close the publishing
//     connection (frame_too_large) and the message loop;
//   - a good reading sent after them raises its alert.
func TestOneMessageCannotTakeAConnectionDown(t *testing.T) {
	if testing.Short() {
		t.Skip("needs brokers")
	}
	tests := []struct {
		source string
		// tooLarge is the size of the reading poisoned too_large; dropped
		// is one the broker itself never sends (0: none).
		tooLarge, dropped int
	}{
		{"mqtt", transport.DefaultMaxMessageBytes + 1<<10, 3 << 20},
		{"rabbitmq", 3 << 20, 0},
	}
	for _, tt := range tests {
		t.Run(tt.source, func(t *testing.T) {
			mqttURL, amqpURL := integration.MQTTURL(t), integration.RabbitMQURL(t)
			ch := integration.RabbitMQChannel(t, amqpURL)
			run := strings.ToLower(watermill.NewShortUUID())
			in, alerts, poison := "hx-bounds-"+run+"-in", "hx-bounds-"+run+"-alerts", "hx-bounds-"+run+"-poison"
			t.Cleanup(func() {
				for _, q := range []string{in, alerts, poison} {
					_, _ = ch.QueueDelete(q, false, false, false)
				}
			})
			topic := "hx-bounds/" + run + "/telemetry"
			handler := fmt.Sprintf("{transport: mqtt, topic: %s, group: g, concurrency: 4}", topic)
			if tt.source == "rabbitmq" {
				handler = fmt.Sprintf("{transport: rabbitmq, topic: %s, concurrency: 4}", in)
			}
			conf := fmt.Sprintf(`service: hx-bounds-%[1]s
http_addr: "off"
drain_timeout: 5s
poison: {transport: rabbitmq, topic: %[6]s}
transports:
  mqtt: {servers: [%[2]s], client_id: "hx-bounds-%[1]s-{conn}-{n}"}
  rabbitmq:
    url: %[3]s
    queues: [{name: %[4]s, type: classic}, {name: %[5]s, type: classic}, {name: %[6]s, type: classic}]
handlers:
  telemetry: %[7]s
events:
  AlertRaised: {transport: rabbitmq, topic: %[5]s}
domain:
  thresholds: {temperature: 80}
`, run, mqttURL, amqpURL, in, alerts, poison, handler)
			path := filepath.Join(t.TempDir(), "service.yaml")
			if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
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

			send := func(payload string) {
				if tt.source == "mqtt" {
					mqttPublish(t, mqttURL, topic, payload)
					return
				}
				if err := ch.PublishWithContext(ctx, "", in, false, false, amqp.Publishing{Body: []byte(payload)}); err != nil {
					t.Fatal(err)
				}
			}
			if tt.dropped > 0 {
				send(reading("dropped", tt.dropped))
			}
			send(reading("too-large", tt.tooLarge))
			send(reading("number", 900<<10))
			send(`{"device_id":"good","readings":{"temperature":100}}`)

			if alert := consumeOne(t, ch, alerts); !strings.Contains(string(alert.Body), `"good"`) {
				t.Fatalf("alert %s, want the good reading's", alert.Body)
			}
			got := map[string]amqp.Delivery{}
			for range 2 {
				d := consumeOne(t, ch, poison)
				device, _, _ := strings.Cut(strings.TrimPrefix(string(d.Body), `{"device_id":"`), `"`)
				got[device] = d
			}
			stop() // what is in flight is settled: nothing more can be poisoned
			if q, err := ch.QueueDeclarePassive(poison, false, false, false, false, nil); err != nil || q.Messages != 0 {
				t.Fatalf("poison queue: %d more messages (%v); want none (the dropped reading never reaches the service)", q.Messages, err)
			}
			tooLarge, number := got["too-large"], got["number"]
			if r, _ := tooLarge.Headers["reason_poisoned"].(string); !strings.HasPrefix(r, "too_large:") || len(tooLarge.Body) != transport.PoisonPayloadBytes {
				t.Errorf("too large reading poisoned with reason %q and %d bytes, want too_large and the first %d", r, len(tooLarge.Body), transport.PoisonPayloadBytes)
			}
			if r, _ := number.Headers["reason_poisoned"].(string); !strings.Contains(r, "cannot unmarshal number 9999") || len(r) > transport.MetadataValueBytes {
				t.Errorf("unparsable reading poisoned with a reason of %d bytes (%.60q...), want the decoder's error in at most %d", len(r), r, transport.MetadataValueBytes)
			}
			if len(number.Body) < 900<<10 {
				t.Errorf("unparsable reading poisoned with %d bytes, want its whole payload", len(number.Body))
			}
		})
	}
}
