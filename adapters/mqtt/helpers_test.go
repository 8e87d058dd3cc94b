package mqtt_test

import (
	"crypto/sha1"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/mqtt"
)

// testConfig is a configuration for tests: fast reconnects and nack
// redelivery, a client ID unique to the test (and to name, when set).
func testConfig(t testing.TB, url, name string) mqtt.Config {
	t.Helper()
	return mqtt.Config{
		Servers:        []string{url},
		ClientID:       testClientID(t, name) + "-{conn}-{n}",
		SessionExpiry:  5 * time.Minute,
		ReconnectMin:   20 * time.Millisecond,
		ReconnectMax:   500 * time.Millisecond,
		PublishTimeout: 10 * time.Second,
		ConnectTimeout: 5 * time.Second,
		NackBackoffMin: 5 * time.Millisecond,
		NackBackoffMax: 100 * time.Millisecond,
		CloseTimeout:   5 * time.Second,
	}
}

func testClientID(t testing.TB, name string) string {
	h := sha1.Sum([]byte(t.Name() + "|" + name))
	return "hx-" + hex.EncodeToString(h[:6])
}

func logger() watermill.LoggerAdapter {
	if os.Getenv("MQTT_TEST_DEBUG") != "" {
		return watermill.NewStdLogger(true, false)
	}
	return watermill.NopLogger{}
}

func newPublisher(t testing.TB, cfg mqtt.Config) *mqtt.Publisher {
	t.Helper()
	p, err := mqtt.NewPublisher(cfg, logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newSubscriber(t testing.TB, cfg mqtt.Config, sc mqtt.SubscriberConfig) *mqtt.Subscriber {
	t.Helper()
	if sc.Handler == "" {
		sc.Handler = "sub"
	}
	s, err := mqtt.NewSubscriber(cfg, sc, logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// receive reads n messages from out, acking each, or fails after timeout.
func receive(t testing.TB, out <-chan *message.Message, n int, timeout time.Duration) []*message.Message {
	t.Helper()
	var got []*message.Message
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case m, ok := <-out:
			if !ok {
				t.Fatalf("output closed after %d of %d messages", len(got), n)
			}
			m.Ack()
			got = append(got, m)
		case <-deadline:
			t.Fatalf("received %d of %d messages in %s", len(got), n, timeout)
		}
	}
	return got
}
