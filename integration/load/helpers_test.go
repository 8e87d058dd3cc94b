package load

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/hexmill/hexmill/integration"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(integration.WithBrokers(m))
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// rabbit connects to the test RabbitMQ with a channel for the test's own
// declarations and publications.
func rabbit(t *testing.T) (string, *amqp.Channel) {
	t.Helper()
	url := integration.RabbitMQURL(t)
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial rabbitmq: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	return url, ch
}

// tempQueue declares a durable queue with a name unique to the test and
// deletes it when the test ends.
func tempQueue(t *testing.T, url, prefix string) string {
	t.Helper()
	name := prefix + "-" + NewRunID()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial rabbitmq: %v", err)
	}
	ch, err := conn.Channel()
	if err == nil {
		_, err = ch.QueueDeclare(name, true, false, false, false, nil)
	}
	_ = conn.Close()
	if err != nil {
		t.Fatalf("declare %s: %v", name, err)
	}
	t.Cleanup(func() { deleteQueue(t, url, name) })
	return name
}

func deleteQueue(t *testing.T, url, name string) {
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Errorf("delete %s: %v", name, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err == nil {
		_, err = ch.QueueDelete(name, false, false, false)
	}
	if err != nil {
		t.Errorf("delete %s: %v", name, err)
	}
}

// consumeN reads n deliveries from queue (acking them) and returns their
// bodies and message IDs.
func consumeN(t *testing.T, ctx context.Context, ch *amqp.Channel, queue string, n int) []amqp.Delivery {
	t.Helper()
	deliveries, err := ch.Consume(queue, "", false, true, false, false, nil)
	if err != nil {
		t.Fatalf("consume %s: %v", queue, err)
	}
	var got []amqp.Delivery
	for len(got) < n {
		select {
		case d, ok := <-deliveries:
			if !ok {
				t.Fatalf("consumer of %s closed after %d of %d", queue, len(got), n)
			}
			_ = d.Ack(false)
			got = append(got, d)
		case <-ctx.Done():
			t.Fatalf("received %d of %d from %s: %v", len(got), n, queue, ctx.Err())
		}
	}
	return got
}

// serviceTelemetry and serviceAlert are the JSON of the service the load
// tool drives (integration/testservice, and the sample service): what it reads
// and what it publishes.
type serviceTelemetry struct {
	DeviceID string             `json:"device_id,omitempty"`
	Readings map[string]float64 `json:"readings"`
	At       time.Time          `json:"at"`
}

type serviceAlert struct {
	DeviceID  string    `json:"device_id"`
	Metric    string    `json:"metric"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	At        time.Time `json:"at"`
}
