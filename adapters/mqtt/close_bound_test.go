package mqtt_test

// Close on a socket that stalls: the broker (or the network) stops
// reading and answering, so paho's writes block, and nothing of the
// clean end (PUBACKs awaited, DISCONNECT written) completes. Close must
// still return within close_timeout, and what was in flight must fail.

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/integration"
)

// closeSlack is what a Close may take beyond close_timeout on a busy
// machine: far below publish_timeout and keepalive, which it must not
// wait for.
const closeSlack = 5 * time.Second

func TestPublisherCloseStalledSocket(t *testing.T) {
	proxy := integration.NewProxy(t, strings.TrimPrefix(integration.MQTTURL(t), "mqtt://"))
	cfg := testConfig(t, "mqtt://"+proxy.Addr(), "")
	cfg.CloseTimeout = time.Second
	// Longer than the test: neither paho's keepalive nor the PUBACK wait
	// may be what ends the Close.
	cfg.KeepAlive = time.Minute
	cfg.PublishTimeout = time.Minute
	pub, err := mqtt.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	topic := "hexmill/test/" + testClientID(t, "") + "/stall"
	if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("before the stall"))); err != nil {
		t.Fatal(err)
	}

	proxy.Stall(true)
	// Megabyte payloads: more than the socket buffers hold, so paho's
	// writes block, not only its waits for PUBACK.
	payload := bytes.Repeat([]byte("x"), 1<<20)
	const inFlight = 16
	results := make(chan error, inFlight)
	var wg, entered sync.WaitGroup
	for range inFlight {
		wg.Add(1)
		entered.Add(1)
		go func() {
			defer wg.Done()
			entered.Done()
			results <- pub.Publish(topic, message.NewMessage(watermill.NewUUID(), payload))
		}()
	}
	t.Cleanup(wg.Wait)
	entered.Wait()
	if !proxy.AwaitHolding(10 * time.Second) {
		t.Fatal("no publish reached the stalled proxy within 10 s")
	}

	start := time.Now()
	closeErr := pub.Close()
	took := time.Since(start)
	t.Logf("Close on a stalled socket returned after %s: %v", took.Round(time.Millisecond), closeErr)
	if took > cfg.CloseTimeout+closeSlack {
		t.Fatalf("Close took %s on a stalled socket; want close_timeout (%s) at most, plus %s", took, cfg.CloseTimeout, closeSlack)
	}
	ended := make(chan struct{})
	go func() { wg.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(closeSlack):
		t.Fatalf("publishes in flight still blocked %s after Close returned", closeSlack)
	}
	close(results)
	failed := 0
	for err := range results {
		switch {
		case err == nil:
			t.Error("a publish on the stalled socket returned nil: nothing confirmed it")
		case !errors.Is(err, mqtt.ErrClosed):
			failed++
		}
	}
	if failed == 0 {
		t.Error("no publish was in flight at Close: the test proved nothing")
	}
	t.Logf("%d publishes in flight failed at Close", failed)
}

// A subscriber with messages handed out, acked and not, when the socket
// stalls: Close returns within close_timeout, and the connection is gone.
func TestSubscriberCloseStalledSocket(t *testing.T) {
	proxy := integration.NewProxy(t, strings.TrimPrefix(integration.MQTTURL(t), "mqtt://"))
	cfg := testConfig(t, "mqtt://"+proxy.Addr(), "")
	cfg.CloseTimeout = time.Second
	cfg.KeepAlive = time.Minute
	cfg.PublishTimeout = time.Minute
	sub, err := mqtt.NewSubscriber(cfg, mqtt.SubscriberConfig{Handler: "stall", Concurrency: 4}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	topic := "hexmill/test/" + testClientID(t, "") + "/stall"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	pubCfg := testConfig(t, integration.MQTTURL(t), "pub")
	pub, err := mqtt.NewPublisher(pubCfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for range 4 {
		if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("m"))); err != nil {
			t.Fatal(err)
		}
	}
	var got []*message.Message
	for len(got) < 4 {
		select {
		case m := <-msgs:
			got = append(got, m)
		case <-ctx.Done():
			t.Fatalf("%d of 4 messages arrived", len(got))
		}
	}
	proxy.Stall(true)
	got[0].Ack()
	got[1].Ack()

	start := time.Now()
	closeErr := sub.Close()
	took := time.Since(start)
	t.Logf("Close on a stalled socket returned after %s: %v", took.Round(time.Millisecond), closeErr)
	if took > cfg.CloseTimeout+closeSlack {
		t.Fatalf("Close took %s on a stalled socket; want close_timeout (%s) at most, plus %s", took, cfg.CloseTimeout, closeSlack)
	}
	if err := sub.Ready(); err == nil {
		t.Error("Ready is nil after Close")
	}
}

// A publish whose message context ends (the outbox relay's at the stop's
// deadline, a handler's when the stop gives up on it) returns then, not
// after publish_timeout.
func TestPublishEndsWithMessageContext(t *testing.T) {
	proxy := integration.NewProxy(t, strings.TrimPrefix(integration.MQTTURL(t), "mqtt://"))
	cfg := testConfig(t, "mqtt://"+proxy.Addr(), "")
	cfg.PublishTimeout = time.Minute
	pub, err := mqtt.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	topic := "hexmill/test/" + testClientID(t, "") + "/ctx"
	if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("before the stall"))); err != nil {
		t.Fatal(err)
	}
	proxy.Stall(true)
	const bound = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	msg := message.NewMessage(watermill.NewUUID(), []byte("stalled"))
	msg.SetContext(ctx)
	start := time.Now()
	err = pub.Publish(topic, msg)
	took := time.Since(start)
	t.Logf("publish with a %s message context on a stalled socket: %s, %v", bound, took.Round(time.Millisecond), err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the message context's context.DeadlineExceeded", err)
	}
	if took > bound+closeSlack {
		t.Errorf("the publish took %s; want it to end with its message context (%s)", took, bound)
	}
}
