package runtime_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/integration"
)

// On RabbitMQ, with the key taken from a header (metadata), each device's
// readings are handled in the order they were queued, several devices at
// once, with the prefetch holding more than the workers, and the queue is
// empty afterwards: every delivery was acked.
func TestOrderedOnRabbitMQ(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a RabbitMQ broker")
	}
	const keys, perKey, workers = 20, 30, 8
	queue := "hx-ord-" + watermill.NewShortUUID()
	url := integration.RabbitMQURL(t)
	rcfg := rabbitmq.Config{URL: rabbitmq.URL(url), Queues: []rabbitmq.QueueConfig{{Name: queue, Type: "classic"}, {Name: queue + ".poison", Type: "classic"}}}
	cfg := testConfig()
	cfg.Events = nil
	cfg.Handlers["test"] = config.Binding{Transport: config.TransportRabbitMQ, Topic: queue, Concurrency: workers,
		OrderBy: "{device}", Options: map[string]string{}}
	cfg.Poison = config.EventBinding{Transport: config.TransportRabbitMQ, Topic: queue + ".poison"}

	log, rt := startOrdered(t, cfg, config.TransportRabbitMQ, func(ctx context.Context) (transport.Transport, error) {
		tr, err := rabbitmq.New(rcfg, watermill.NopLogger{})
		if err != nil {
			return nil, err
		}
		return tr, tr.Open(ctx)
	}, keys*perKey)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, q := range []string{queue, queue + ".poison"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
	})
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range keys {
		names = append(names, fmt.Sprint("d", k))
	}
	for s := 1; s <= perKey; s++ {
		for _, k := range names {
			c, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false,
				amqp.Publishing{MessageId: watermill.NewUUID(), Headers: amqp.Table{"device": k}, Body: []byte(strconv.Itoa(s))})
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := c.WaitContext(ctx); !ok || err != nil {
				t.Fatalf("publish not confirmed: %v", err)
			}
		}
	}
	log.wait("ordered on RabbitMQ")
	checkInOrder(t, log.snapshot(), names, perKey)
	if log.most < 2 {
		t.Errorf("at most %d handlers ran at once, want devices in parallel", log.most)
	}
	if err := rt.Stop(context.Background()); err != nil {
		t.Fatalf("stop: %v", err)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 0 {
		t.Errorf("%d messages left in the queue after the stop; want every one acked", q.Messages)
	}
}
