package integration_test

// What a mosquitto restart does to persistent sessions, shown with raw
// paho.golang and no hexmill code (issue 13): the broker restores a
// session's plain subscriptions and queued messages from its persistence
// file, but not its $share subscriptions. Until the shared subscriber
// subscribes again, a QoS 1 publish to the topic is answered with PUBACK
// 0x10 (no matching subscribers) and dropped. docs/mqtt.md says what a
// deployment does about it; the end-to-end generator publishes such a
// message again (integration/load).

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/hexmill/hexmill/integration"
)

func TestMosquittoRestartForgetsSharedSubscriptions(t *testing.T) {
	m := integration.StartMosquitto(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	subs := []struct {
		name, filter, topic string
	}{
		{"plain", "repro/plain", "repro/plain"},
		{"shared", "$share/g/repro/shared", "repro/shared"},
	}
	// Each subscriber opens a persistent session with its subscription
	// and leaves; the broker keeps the session.
	for _, s := range subs {
		c, _ := persistentClient(t, ctx, m.Addr(), "repro-"+s.name, nil)
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: s.filter, QoS: 1}}}); err != nil {
			t.Fatalf("subscribe %s: %v", s.filter, err)
		}
		disconnect(t, c)
	}

	m.Restart()

	pub := rawMQTTClient(t, ctx, m.Addr(), "repro-publisher")
	publish := func(topic, payload string) byte {
		t.Helper()
		r, err := pub.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
		if err != nil {
			t.Fatalf("publish %s: %v", topic, err)
		}
		return r.ReasonCode
	}
	if code := publish("repro/plain", "after restart"); code != 0 {
		t.Fatalf("publish to the plain subscription's topic after the restart: PUBACK 0x%02x, want 0x00 (the session's subscription restored)", code)
	}
	if code := publish("repro/shared", "after restart"); code != 0x10 {
		t.Fatalf("publish to the shared subscription's topic after the restart: PUBACK 0x%02x, want 0x10: "+
			"this mosquitto now keeps $share subscriptions across a restart; update docs/mqtt.md", code)
	}

	// The sessions come back (session present) with what they hold: the
	// plain one gets its message without subscribing again; the shared
	// one has nothing, and gets a message published again once it has
	// subscribed again: the mitigation.
	for _, s := range subs {
		got := make(chan string, 4)
		c, ca := persistentClient(t, ctx, m.Addr(), "repro-"+s.name, got)
		if !ca.SessionPresent {
			t.Fatalf("%s: session not present after the restart", s.name)
		}
		if s.name == "shared" {
			if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: s.filter, QoS: 1}}}); err != nil {
				t.Fatalf("subscribe %s again: %v", s.filter, err)
			}
			if code := publish(s.topic, "published again"); code != 0 {
				t.Fatalf("publish again after the new SUBSCRIBE: PUBACK 0x%02x, want 0x00", code)
			}
		}
		select {
		case p := <-got:
			t.Logf("%s subscription: received %q", s.name, p)
		case <-ctx.Done():
			t.Fatalf("%s subscription: nothing delivered", s.name)
		}
		disconnect(t, c)
	}
}

// persistentClient connects clientID with clean start false and a session
// expiry of an hour; PUBLISHes received are acked and their payloads sent
// to got (when not nil).
func persistentClient(t *testing.T, ctx context.Context, addr, clientID string, got chan<- string) (*paho.Client, *paho.Connack) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := paho.ClientConfig{ClientID: clientID, Conn: conn}
	if got != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case got <- string(pr.Packet.Payload):
			default:
			}
			return true, nil
		}}
	}
	c := paho.NewClient(cfg)
	expiry := uint32(3600)
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: false, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		t.Fatalf("connect %s: %v", clientID, err)
	}
	if ca.ReasonCode != 0 {
		t.Fatalf("connect %s: reason 0x%02x", clientID, ca.ReasonCode)
	}
	return c, ca
}

// disconnect ends c's connection and keeps its session.
func disconnect(t *testing.T, c *paho.Client) {
	t.Helper()
	if err := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	<-c.Done()
}
