package mqtt_test

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/eclipse/paho.golang/packets"

	"github.com/hexmill/hexmill/adapters/mqtt"
)

// A QoS 1 publish no subscription matches: the broker answers 0x10 and
// drops the message. A mandatory binding says so; the default does not.
func TestPublishMandatory(t *testing.T) {
	cfg := sharedConfig(t, "")
	pub := newPublisher(t, cfg)
	topic := "hexmill-test/" + testClientID(t, "topic") + "/nobody"
	tests := []struct {
		options map[string]string
		want    error
	}{
		{nil, nil},
		{map[string]string{mqtt.OptionMandatory: "false"}, nil},
		{map[string]string{mqtt.OptionMandatory: "true"}, mqtt.ErrNoSubscribers},
	}
	for _, tt := range tests {
		p, err := pub.WithOptions(tt.options)
		if err != nil {
			t.Fatal(err)
		}
		err = p.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x")))
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("options %v: publish with no subscriber: %v, want %v", tt.options, err, tt.want)
		}
	}
	if _, err := pub.WithOptions(map[string]string{mqtt.OptionMandatory: "yes"}); err == nil || !strings.Contains(err.Error(), "mandatory") {
		t.Errorf(`option mandatory "yes": %v, want an error naming the option`, err)
	}
}

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

// silentBroker accepts MQTT connections, answers CONNECT and never
// acknowledges a PUBLISH: each connection on which one arrived is sent on
// published.
type silentBroker struct {
	l         net.Listener
	published chan net.Conn

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
	b := &silentBroker{l: l, published: make(chan net.Conn, 16)}
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
		}
	}
}
