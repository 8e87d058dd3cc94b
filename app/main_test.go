package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/integration"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(integration.WithBrokers(m))
}

const (
	inTopic     = "in"
	outTopic    = "out"
	poisonTopic = "poison"
	group       = "g"
)

func publish(t *testing.T, b *memory.Transport, topic, id, payload string) *message.Message {
	t.Helper()
	msg := message.NewMessage(id, []byte(payload))
	if err := b.Publish(topic, msg); err != nil {
		t.Fatal(err)
	}
	return msg
}

// receive reads n messages of topic in its own group and acks them.
func receive(t *testing.T, b *memory.Transport, topic string, n int) []*message.Message {
	t.Helper()
	sub, err := b.Subscriber(memory.SubscriberConfig{Group: "test-reader", Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var got []*message.Message
	for len(got) < n {
		select {
		case m := <-msgs:
			m.Ack()
			got = append(got, m)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: got %d messages, want %d", topic, len(got), n)
		}
	}
	return got
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
