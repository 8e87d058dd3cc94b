package rabbitmq_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
	"github.com/hexmill/hexmill/adapters/transport/transporttest"
)

// TestContract runs the subscribers' contract suite on a queue of its own
// per test, fed by a raw confirming publisher.
func TestContract(t *testing.T) {
	transporttest.Run(t, func(t *testing.T) transporttest.Binding {
		a := newAdmin(t)
		queue := uniqueName("contract")
		a.cleanup([]string{queue}, nil)
		ch, err := a.conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ch.Close() })
		if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		client := newClient(t, rabbitmq.Config{})
		return transporttest.Binding{
			Topic: queue,
			NewSubscriber: func(t *testing.T, concurrency int) message.Subscriber {
				sub, err := client.Subscriber(rabbitmq.SubscriberConfig{Handler: "contract", Concurrency: concurrency})
				if err != nil {
					t.Fatal(err)
				}
				return sub
			},
			Publish: func(t *testing.T, payloads ...[]byte) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				confirms := make([]*amqp.DeferredConfirmation, 0, len(payloads))
				for _, p := range payloads {
					c, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp.Publishing{Body: p, DeliveryMode: amqp.Persistent})
					if err != nil {
						t.Fatal(err)
					}
					confirms = append(confirms, c)
				}
				for _, c := range confirms {
					if ok, err := c.WaitContext(ctx); err != nil || !ok {
						t.Fatalf("publish not confirmed: %v", err)
					}
				}
			},
		}
	})
}
