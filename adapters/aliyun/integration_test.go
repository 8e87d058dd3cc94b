package aliyun

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport/secret"
)

// Every sign method and STS authenticate against the broker whose auth
// backend verifies Aliyun's signature; internal users keep working; the
// metadata arrives as specified and the payload untouched.
func TestSignedConnectAndReceive(t *testing.T) {
	addr := signingBroker(t)
	cases := []struct {
		name   string
		config func(*Config)
	}{
		{"hmacsha1", func(c *Config) { c.SignMethod = SignHMACSHA1 }},
		{"hmacsha256", func(c *Config) { c.SignMethod = SignHMACSHA256 }},
		{"hmacmd5", func(c *Config) { c.SignMethod = SignHMACMD5 }},
		{"ststoken", func(c *Config) {
			c.AccessKeyID, c.AccessKeySecret, c.SecurityToken = testSTSAccessKeyID, secret.String(testSTSSecret), secret.String(testSTSToken)
		}},
	}
	p := newPusher(t, addr) // guest: an internal user
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			queue := uniqueQueue("signed")
			cfg := testConfig(t, addr, queue)
			cfg.Connections = 2
			tc.config(&cfg)
			c := newConsumer(t, cfg)
			sub, err := c.Subscriber(SubscriberConfig{Handler: "telemetry", Concurrency: 4})
			if err != nil {
				t.Fatal(err)
			}
			out, err := sub.Subscribe(context.Background(), "/+/+/thing/event/property/post")
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Ready(); err != nil {
				t.Fatalf("Ready after Subscribe: %v", err)
			}
			for i := range cfg.Connections {
				users := verifier.allowedFor(cfg.clientID(i))
				if len(users) != 1 || !strings.Contains(users[0], "signMethod="+cfg.SignMethod) {
					t.Fatalf("connection %d: broker allowed %v", i, users)
				}
			}
			payload := []byte(`{"id":"1","params":{"temp":21.5},"method":"thing.event.property.post"}`)
			if err := p.push(queue, "/pk1/dev-1/thing/event/property/post", "msg-1", payload, nil); err != nil {
				t.Fatal(err)
			}
			m := receive(t, out)
			if string(m.Payload) != string(payload) {
				t.Fatalf("payload %q, want it untouched", m.Payload)
			}
			for k, want := range map[string]string{"topic": "/pk1/dev-1/thing/event/property/post", "messageId": "msg-1", "productKey": "pk1", "deviceName": "dev-1", "device_id": "pk1.dev-1"} {
				if got := m.Metadata.Get(k); got != want {
					t.Errorf("metadata %s = %q, want %q", k, got, want)
				}
			}
			if m.UUID != "msg-1" || m.Metadata.Get("generateTime") == "" {
				t.Errorf("uuid %q generateTime %q", m.UUID, m.Metadata.Get("generateTime"))
			}
			m.Ack()
			if err := sub.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func receive(t testing.TB, out <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-out:
		if !ok {
			t.Fatal("output closed")
		}
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no message within 20s")
	}
	return nil
}

// A wrong secret is refused by the broker; Start says so at once, naming
// the client ID and consumer group and not the secret, and the attempts
// are backed off.
func TestWrongSecretRefused(t *testing.T) {
	addr := signingBroker(t)
	cfg := testConfig(t, addr, uniqueQueue("wrong"))
	cfg.AccessKeySecret = "not-the-secret"
	c := newConsumer(t, cfg)
	err := c.Open(context.Background())
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("Start: %v, want ErrAuth", err)
	}
	msg := err.Error()
	for _, want := range []string{cfg.clientID(0), "consumer group " + testConsumerGroup, "authentication refused", "access_key_secret"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "not-the-secret") || strings.Contains(msg, sign(cfg, cfg.clientID(0), time.Now()).Password[:8]) {
		t.Errorf("error %q leaks the secret or a signature", msg)
	}
	if verifier.deniedFor(cfg.clientID(0)) == 0 {
		t.Error("the broker's auth backend never saw the attempt")
	}
	if err := c.Ready(); err == nil || !strings.Contains(err.Error(), cfg.clientID(0)) {
		t.Errorf("Ready = %v, want the connection named as down", err)
	}
	// The subscriber reports the same, and a correct client still works.
	sub, _ := c.Subscriber(SubscriberConfig{})
	if _, err := sub.Subscribe(context.Background(), ""); !errors.Is(err, ErrAuth) {
		t.Errorf("Subscribe: %v, want ErrAuth", err)
	}
}

// The internal user guest keeps working next to the HTTP backend.
func TestInternalUsersKeepWorking(t *testing.T) {
	addr := signingBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://"+addr, &amqp.ConnOptions{SASLType: amqp.SASLTypePlain("guest", "guest")})
	if err != nil {
		t.Fatalf("guest: %v", err)
	}
	_ = conn.Close()
}
