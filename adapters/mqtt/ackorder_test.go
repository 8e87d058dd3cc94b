package mqtt_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/eclipse/paho.golang/packets"

	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/integration"
)

// Acks reach the broker in arrival order: the ack of a message waits until
// every message that arrived before it on the connection is acked, and
// every ack given is on the wire before Close disconnects. The same with
// messages settled through Ack and through their transport.Settler.
func TestAcksInArrivalOrder(t *testing.T) {
	for _, byConsumer := range []bool{false, true} {
		t.Run(fmt.Sprintf("ByConsumer=%v", byConsumer), func(t *testing.T) {
			testAcksInArrivalOrder(t, byConsumer)
		})
	}
}

func testAcksInArrivalOrder(t *testing.T, byConsumer bool) {
	ack := ackFunc(byConsumer)
	tap := newWireTap(t, strings.TrimPrefix(integration.MQTTURL(t), "mqtt://"))
	cfg := sharedConfig(t, watermill.NewShortUUID()) // a fresh session
	direct := cfg
	cfg.Servers = []string{"mqtt://" + tap.addr()}
	topic := "hx-" + watermill.NewShortUUID() + "/order"
	sc := mqtt.SubscriberConfig{Handler: "order", Concurrency: 8}

	// The first connection gets 1, 2 and 3; 3 and 2 are handled, 1 is not.
	sub := newSubscriber(t, cfg, sc)
	out, err := sub.Subscribe(subscribeContext(byConsumer), topic)
	if err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(t, direct)
	for i := 1; i <= 3; i++ {
		if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(fmt.Sprint(i)))); err != nil {
			t.Fatal(err)
		}
	}
	first := take(t, out, 3)
	if got := payloads(first); got != "1 2 3" {
		t.Fatalf("handed out %q, want arrival order 1 2 3", got)
	}
	ack(first[2])
	ack(first[1])
	if err := sub.Close(); err != nil { // waits until both acks are settled
		t.Fatal(err)
	}
	select {
	case <-first[0].Context().Done():
	default:
		t.Error("the unsettled message's context did not end at Close")
	}
	if acks := tap.connection(t).acks(); acks != "DISCONNECT" {
		t.Fatalf("acks on the wire: %q, want DISCONNECT only: 2 and 3 were acked while 1 was not", acks)
	}

	// The next connection gets all three again and handles them in
	// reverse order.
	sub = newSubscriber(t, cfg, sc)
	if out, err = sub.Subscribe(subscribeContext(byConsumer), topic); err != nil {
		t.Fatal(err)
	}
	again := take(t, out, 3)
	if got := payloads(again); got != "1 2 3" {
		t.Fatalf("redelivered %q, want 1 2 3", got)
	}
	for i := 2; i >= 0; i-- {
		ack(again[i])
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if acks := tap.connection(t).acks(); acks != "1 2 3 DISCONNECT" {
		t.Fatalf("acks on the wire: %q, want 1 2 3 DISCONNECT", acks)
	}
}

// A QoS 2 subscription completes the exchange once the message is handled:
// PUBREC from the subscriber, PUBREL from the broker, PUBCOMP from the
// subscriber, all before DISCONNECT.
func TestQoS2Exchange(t *testing.T) {
	tap := newWireTap(t, strings.TrimPrefix(integration.MQTTURL(t), "mqtt://"))
	cfg := sharedConfig(t, watermill.NewShortUUID())
	direct := cfg
	cfg.Servers = []string{"mqtt://" + tap.addr()}
	topic := "hx-" + watermill.NewShortUUID() + "/qos2"
	sub := newSubscriber(t, cfg, mqtt.SubscriberConfig{Concurrency: 1, Options: map[string]string{mqtt.OptionQoS: "2"}})
	out, err := sub.Subscribe(transport.SettledByConsumer(context.Background()), topic)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := newPublisher(t, direct).WithOptions(map[string]string{mqtt.OptionQoS: "2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("once"))); err != nil {
		t.Fatal(err)
	}
	m := take(t, out, 1)[0]
	transport.SettlerFrom(m.Context()).Settle(true)
	// The broker's PUBREL may still be on its way: wait for it and the
	// PUBCOMP. The tap reads each direction on its own goroutine, so only
	// the order within a direction is known: broker PUBLISH then PUBREL,
	// subscriber PUBREC then PUBCOMP (the broker sends PUBREL only after
	// PUBREC, the subscriber PUBCOMP only after PUBREL).
	conn := tap.connection(t)
	var fromBroker, fromClient []string
	last := func(s []string) string {
		if len(s) == 0 {
			return ""
		}
		return s[len(s)-1]
	}
	deadline := time.After(10 * time.Second)
	for last(fromBroker) != "PUBREL" || last(fromClient) != "PUBCOMP" {
		select {
		case p, ok := <-conn.packets:
			if !ok {
				t.Fatalf("connection ended after broker %v, subscriber %v", fromBroker, fromClient)
			}
			var name string
			switch pk := p.cp.Content.(type) {
			case *packets.Publish:
				name = fmt.Sprintf("PUBLISH qos %d", pk.QoS)
			case *packets.Pubrec:
				name = "PUBREC"
			case *packets.Pubrel:
				name = "PUBREL"
			case *packets.Pubcomp:
				name = "PUBCOMP"
			default:
				continue
			}
			if p.fromClient {
				fromClient = append(fromClient, name)
			} else {
				fromBroker = append(fromBroker, name)
			}
		case <-deadline:
			t.Fatalf("no PUBREL and PUBCOMP: broker %v, subscriber %v", fromBroker, fromClient)
		}
	}
	if got := strings.Join(fromBroker, ", "); got != "PUBLISH qos 2, PUBREL" {
		t.Errorf("broker sent %s, want PUBLISH qos 2, PUBREL", got)
	}
	if got := strings.Join(fromClient, ", "); got != "PUBREC, PUBCOMP" {
		t.Errorf("subscriber sent %s, want PUBREC, PUBCOMP", got)
	}
}

// subscribeContext is the Subscribe context of a consumer that settles
// through the transport.Settler (byConsumer: the runtime) or through Ack and
// Nack (a watermill consumer).
func subscribeContext(byConsumer bool) context.Context {
	if byConsumer {
		return transport.SettledByConsumer(context.Background())
	}
	return context.Background()
}

// ackFunc acks a message as a consumer that settles it (the runtime) or
// as a watermill consumer.
func ackFunc(byConsumer bool) func(*message.Message) {
	if byConsumer {
		return func(m *message.Message) { transport.SettlerFrom(m.Context()).Settle(true) }
	}
	return func(m *message.Message) { m.Ack() }
}

func take(t *testing.T, out <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	var got []*message.Message
	for len(got) < n {
		select {
		case m := <-out:
			got = append(got, m)
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of %d messages", len(got), n)
		}
	}
	return got
}

func payloads(msgs []*message.Message) string {
	var s []string
	for _, m := range msgs {
		s = append(s, string(m.Payload))
	}
	return strings.Join(s, " ")
}

// wireTap is a TCP proxy in front of a broker that decodes the MQTT packets
// of each connection, both ways, without changing a byte.
type wireTap struct {
	l     net.Listener
	conns chan *tappedConn
	wg    sync.WaitGroup
}

// tappedConn is one connection's packets, in the order they crossed; the
// channel closes when both directions ended.
type tappedConn struct {
	packets chan tapped
}

type tapped struct {
	fromClient bool
	cp         *packets.ControlPacket
}

func newWireTap(t *testing.T, target string) *wireTap {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wireTap{l: l, conns: make(chan *tappedConn, 16)}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			tc := &tappedConn{packets: make(chan tapped, 1024)}
			w.conns <- tc
			var dirs sync.WaitGroup
			dirs.Add(2)
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				dirs.Wait()
				close(tc.packets)
			}()
			for _, d := range []struct {
				src, dst   net.Conn
				fromClient bool
			}{{c, b, true}, {b, c, false}} {
				w.wg.Add(1)
				go func() {
					defer w.wg.Done()
					defer dirs.Done()
					w.pipe(d.src, d.dst, d.fromClient, tc)
				}()
			}
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		w.wg.Wait()
	})
	return w
}

func (w *wireTap) addr() string { return w.l.Addr().String() }

// pipe copies src to dst and decodes what it copied; when src ends, it
// closes both.
func (w *wireTap) pipe(src, dst net.Conn, fromClient bool, tc *tappedConn) {
	pr, pw := io.Pipe()
	decoded := make(chan struct{})
	go func() {
		defer close(decoded)
		for {
			cp, err := packets.ReadPacket(pr)
			if err != nil {
				_, _ = io.Copy(io.Discard, pr)
				return
			}
			tc.packets <- tapped{fromClient: fromClient, cp: cp}
		}
	}()
	_, _ = io.Copy(dst, io.TeeReader(src, pw))
	_ = pw.Close()
	<-decoded
	_ = src.Close()
	_ = dst.Close()
}

// connection is the next connection through the tap.
func (w *wireTap) connection(t *testing.T) *tappedConn {
	t.Helper()
	select {
	case c := <-w.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection through the tap")
		return nil
	}
}

// acks reads the connection to its end and returns what the client
// acknowledged, as the payloads of the acked messages in the order of the
// acks, and DISCONNECT where the client sent it.
func (c *tappedConn) acks() string {
	payload := map[uint16]string{}
	var out []string
	for p := range c.packets {
		switch pk := p.cp.Content.(type) {
		case *packets.Publish:
			if !p.fromClient {
				payload[pk.PacketID] = string(pk.Payload)
			}
		case *packets.Puback:
			if p.fromClient {
				out = append(out, payload[pk.PacketID])
			}
		case *packets.Disconnect:
			if p.fromClient {
				out = append(out, "DISCONNECT")
			}
		}
	}
	return strings.Join(out, " ")
}
