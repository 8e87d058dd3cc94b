package mqtt_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/integration"
)

// With large messages, max_queued_bytes, not receive_maximum, bounds what
// a subscriber holds arrived and not handed out: a slow consumer and fast
// publishers of 32 KiB messages never make it hold more than
// max_queued_bytes plus one message, and every message is handled.
func TestQueueBoundedByBytes(t *testing.T) {
	broker := integration.StartMosquitto(t, "")
	cfg := testConfig(t, broker.URL(), "")
	cfg.ReceiveMaximum = 1000
	cfg.MaxQueuedBytes = 256 << 10
	const n, size = 300, 32 << 10
	topic := "hx-" + watermill.NewShortUUID() + "/bytes"
	sub := newSubscriber(t, cfg, mqtt.SubscriberConfig{Concurrency: 2})
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
			time.Sleep(time.Millisecond) // slower than the publishers
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
			maxQueued = max(maxQueued, sub.QueuedBytes())
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	pub := newPublisher(t, cfg)
	payload := []byte(strings.Repeat("x", size))
	var wg sync.WaitGroup
	for p := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < n; i += 6 {
				if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
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
	if maxQueued > cfg.MaxQueuedBytes+size {
		t.Errorf("up to %d bytes queued in the subscriber; max_queued_bytes is %d", maxQueued, cfg.MaxQueuedBytes)
	}
	t.Logf("at most %d bytes queued (max_queued_bytes %d)", maxQueued, cfg.MaxQueuedBytes)
}
