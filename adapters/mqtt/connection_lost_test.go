package mqtt_test

// Connections that drop while a publish or a subscribe waits for the
// broker's answer, against a broker that never answers.

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/eclipse/paho.golang/packets"

	"github.com/hexmill/hexmill/adapters/mqtt"
)

// A publish whose connection drops before its PUBACK ends at once with an
// error (the caller publishes again), not after PublishTimeout: paho
// forgets a clean session's pending acks when the connection is lost.
func TestPublishConnectionLostInFlight(t *testing.T) {
	broker := newSilentBroker(t)
	cfg := testConfig(t, "mqtt://"+broker.addr(), "")
	cfg.PublishTimeout = time.Minute
	pub := newPublisher(t, cfg)

	done := make(chan error, 1)
	go func() { done <- pub.Publish("a/b", message.NewMessage(watermill.NewUUID(), []byte("x"))) }()
	conn := <-broker.published // the PUBLISH reached the broker, which never acks it
	_ = conn.Close()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "connection lost") {
			t.Fatalf("publish after its connection dropped: %v, want a connection lost error", err)
		}
	case <-time.After(cfg.PublishTimeout / 2):
		t.Fatalf("publish still waiting %s after its connection dropped", cfg.PublishTimeout/2)
	}
}

// A subscription whose connection drops before its SUBACK is made again on
// the next connection at once, not after PublishTimeout: paho keeps the
// pending SUBACK across a reconnect and never resends the SUBSCRIBE.
func TestSubscribeConnectionLostInFlight(t *testing.T) {
	broker := newSilentBroker(t)
	cfg := testConfig(t, "mqtt://"+broker.addr(), "")
	cfg.PublishTimeout = time.Minute
	sub := newSubscriber(t, cfg, mqtt.SubscriberConfig{Group: "g"})

	ctx, cancel := context.WithTimeout(context.Background(), cfg.PublishTimeout/2)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := sub.Subscribe(ctx, "a/+")
		done <- err
	}()
	conn := <-broker.subscribed // never acknowledged
	broker.answerSubscribe.Store(true)
	_ = conn.Close()
	if err := <-done; err != nil {
		t.Fatalf("subscribe after its first connection dropped: %v, want it made on the next connection", err)
	}
}

// silentBroker accepts MQTT connections, answers CONNECT and never
// acknowledges a PUBLISH: each connection on which one arrived is sent on
// published. It acknowledges a SUBSCRIBE once answerSubscribe is set;
// before, the connection is sent on subscribed.
type silentBroker struct {
	l               net.Listener
	published       chan net.Conn
	subscribed      chan net.Conn
	answerSubscribe atomic.Bool

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup // the accept loop and a goroutine per connection
}

func newSilentBroker(t *testing.T) *silentBroker {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &silentBroker{l: l, published: make(chan net.Conn, 16), subscribed: make(chan net.Conn, 16)}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				b.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			_ = c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *silentBroker) addr() string { return b.l.Addr().String() }

func (b *silentBroker) serve(c net.Conn) {
	defer c.Close()
	for {
		p, err := packets.ReadPacket(c)
		if err != nil {
			return
		}
		switch p.Type {
		case packets.CONNECT:
			ack := packets.NewControlPacket(packets.CONNACK)
			if _, err := ack.WriteTo(c); err != nil {
				return
			}
		case packets.PINGREQ:
			if _, err := packets.NewControlPacket(packets.PINGRESP).WriteTo(c); err != nil {
				return
			}
		case packets.PUBLISH:
			b.published <- c
		case packets.SUBSCRIBE:
			sp := p.Content.(*packets.Subscribe)
			if !b.answerSubscribe.Load() {
				b.subscribed <- c
				continue
			}
			ack := packets.NewControlPacket(packets.SUBACK)
			sa := ack.Content.(*packets.Suback)
			sa.PacketID = sp.PacketID
			for _, o := range sp.Subscriptions {
				sa.Reasons = append(sa.Reasons, o.QoS)
			}
			if _, err := ack.WriteTo(c); err != nil {
				return
			}
		}
	}
}
