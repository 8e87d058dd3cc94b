package rabbitmq_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

// A delayed message waits in its delay queue for the delay, then is back
// in the source queue with its ID, payload and metadata; with
// bind_exchange and a group the source queue is <topic>.<group>.
func TestDelayReturnsToTheSourceQueue(t *testing.T) {
	const delay = 600 * time.Millisecond
	exchange, topic := uniqueName("delay-x"), uniqueName("delay-t")
	plain := uniqueName("delay-q")
	grouped := topic + ".g"
	c := newClient(t, rabbitmq.Config{
		Exchanges: []rabbitmq.ExchangeConfig{{Name: exchange, Type: "topic", Durable: ptr(false)}},
		Queues:    []rabbitmq.QueueConfig{{Name: plain, Type: "classic"}},
	})
	a := newAdmin(t)
	a.cleanup([]string{plain, grouped, rabbitmq.DelayQueueName(plain, delay), rabbitmq.DelayQueueName(grouped, delay)}, []string{exchange})
	tests := []struct {
		name, topic, source string
		sc                  transport.SubscriberConfig
	}{
		{"queue from the topology", plain, plain, transport.SubscriberConfig{Handler: "h"}},
		{"bind_exchange with a group", topic, grouped, transport.SubscriberConfig{Handler: "h", Group: "g", Options: map[string]string{"bind_exchange": exchange}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := c.Subscriber(tt.sc)
			if err != nil {
				t.Fatal(err)
			}
			if err := sub.(message.SubscribeInitializer).SubscribeInitialize(tt.topic); err != nil {
				t.Fatal(err)
			}
			var _ transport.Delayer = c
			ctx := context.Background()
			if err := c.DeclareDelays(ctx, tt.sc, tt.topic, []time.Duration{delay}); err != nil {
				t.Fatal(err)
			}
			msg := message.NewMessage("id-1", []byte("payload"))
			msg.Metadata.Set(transport.MetadataDeliveryAttempt, "2")
			msg.Metadata.Set("correlation_id", "c-1")
			parked := time.Now()
			if err := c.Delay(ctx, tt.sc, tt.topic, delay, msg); err != nil {
				t.Fatal(err)
			}
			if n := a.depth(rabbitmq.DelayQueueName(tt.source, delay)); n != 1 {
				t.Fatalf("delay queue holds %d; want 1", n)
			}
			d := a.get(tt.source, 30*time.Second)
			if took := time.Since(parked); took < delay-50*time.Millisecond {
				t.Errorf("back after %s; want not before %s", took, delay)
			}
			if d.MessageId != "id-1" || string(d.Body) != "payload" || d.Headers[transport.MetadataDeliveryAttempt] != "2" || d.CorrelationId != "c-1" || d.DeliveryMode != amqp.Persistent {
				t.Errorf("back as %s %q headers %v correlation %q mode %d; want the parked message, persistent", d.MessageId, d.Body, d.Headers, d.CorrelationId, d.DeliveryMode)
			}
		})
	}
}

// A delay that was not declared is an error, not a message lost in an
// unroutable publish.
func TestDelayUndeclared(t *testing.T) {
	queue := uniqueName("delay-u")
	c := newClient(t, rabbitmq.Config{Queues: []rabbitmq.QueueConfig{{Name: queue, Type: "classic", Durable: ptr(false)}}})
	newAdmin(t).cleanup([]string{queue, rabbitmq.DelayQueueName(queue, time.Second)}, nil)
	sc := transport.SubscriberConfig{Handler: "h"}
	if err := c.DeclareDelays(context.Background(), sc, queue, []time.Duration{time.Second}); err != nil {
		t.Fatal(err)
	}
	err := c.Delay(context.Background(), sc, queue, 2*time.Second, message.NewMessage("m", nil))
	if !errors.Is(err, rabbitmq.ErrUnroutable) {
		t.Fatalf("Delay for an undeclared delay = %v; want ErrUnroutable", err)
	}
}

// A message back from a delay has the routing key it was parked with as
// its topic (so that topic_params match again), while a sender's own
// header of that name, on a message that never went through a delay, is
// neither the topic nor metadata.
func TestDelayKeepsTheTopic(t *testing.T) {
	const delay = 300 * time.Millisecond
	exchange := uniqueName("delay-kx")
	pattern := uniqueName("dev") + ".*.status"
	source := pattern + ".g"
	c := newClient(t, rabbitmq.Config{Exchanges: []rabbitmq.ExchangeConfig{{Name: exchange, Type: "topic", Durable: ptr(false)}}})
	a := newAdmin(t)
	a.cleanup([]string{source, rabbitmq.DelayQueueName(source, delay)}, []string{exchange})
	sc := transport.SubscriberConfig{Handler: "h", Group: "g", Concurrency: 1, Options: map[string]string{"bind_exchange": exchange}}
	sub, err := c.Subscriber(sc)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.DeclareDelays(ctx, sc, pattern, []time.Duration{delay}); err != nil {
		t.Fatal(err)
	}
	out, err := sub.Subscribe(ctx, pattern)
	if err != nil {
		t.Fatal(err)
	}
	next := func() *message.Message {
		t.Helper()
		select {
		case m := <-out:
			m.Ack()
			return m
		case <-ctx.Done():
			t.Fatal("no message within a minute")
			return nil
		}
	}
	ch, err := a.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	device := strings.Replace(pattern, "*", "42", 1)
	if err := ch.PublishWithContext(ctx, exchange, device, false, false, amqp.Publishing{MessageId: "m-1", Body: []byte("r")}); err != nil {
		t.Fatal(err)
	}
	first := next()
	if got := first.Metadata.Get(ports.MetadataTopic); got != device {
		t.Fatalf("first delivery's topic %q; want %q", got, device)
	}
	if err := c.Delay(ctx, sc, pattern, delay, first); err != nil {
		t.Fatal(err)
	}
	back := next()
	if got := back.Metadata.Get(ports.MetadataTopic); back.UUID != "m-1" || got != device {
		t.Errorf("back from the delay as %s with topic %q; want m-1 with %q", back.UUID, got, device)
	}
	forged := amqp.Publishing{MessageId: "m-2", Headers: amqp.Table{"hexmill-parked-topic": strings.Replace(pattern, "*", "99", 1)}}
	if err := ch.PublishWithContext(ctx, "", source, false, false, forged); err != nil {
		t.Fatal(err)
	}
	m := next()
	if got := m.Metadata.Get(ports.MetadataTopic); got != source || m.Metadata.Get("hexmill-parked-topic") != "" {
		t.Errorf("a sender's header: topic %q, metadata %v; want the routing key %q and no such metadata", got, m.Metadata, source)
	}
}
