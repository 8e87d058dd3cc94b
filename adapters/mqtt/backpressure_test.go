package mqtt_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/integration"
)

// The subscriber holds at most receive_maximum messages in its queue even
// when the broker sends more: mosquitto 2.0 stops keeping to the Receive
// Maximum once acks flow, and a backlog at the broker must not move into
// the process's memory. Nothing is lost on the way.
func TestQueueBoundedByReceiveMaximum(t *testing.T) {
	broker := integration.StartMosquitto(t, "")
	cfg := testConfig(t, broker.URL(), "")
	cfg.ReceiveMaximum = 50
	const n = 2000
	topic := "hx-" + watermill.NewShortUUID() + "/bounded"
	sub := newSubscriber(t, cfg, mqtt.SubscriberConfig{Concurrency: 4})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range out {
			time.Sleep(200 * time.Microsecond) // slower than the publishers
			seen[m.UUID] = true
			m.Ack()
			if len(seen) == n {
				return
			}
		}
	}()
	maxQueued := 0
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			maxQueued = max(maxQueued, sub.Queued())
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	pub := newPublisher(t, cfg)
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < n; i += 8 {
				if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x"))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("handled %d of %d messages", len(seen), n)
	}
	<-sampled
	if maxQueued > cfg.ReceiveMaximum {
		t.Errorf("up to %d messages queued in the subscriber; receive_maximum is %d", maxQueued, cfg.ReceiveMaximum)
	}
	t.Logf("at most %d queued (receive_maximum %d)", maxQueued, cfg.ReceiveMaximum)
}
