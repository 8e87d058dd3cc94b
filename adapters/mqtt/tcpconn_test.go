package mqtt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
)

// tcpPair dials a loopback listener through dialTCP and returns both ends.
func tcpPair(t *testing.T) (*tcpConn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	u := &url.URL{Scheme: "mqtt", Host: l.Addr().String()}
	c, err := dialTCP(time.Second)(context.Background(), autopaho.ClientConfig{}, u)
	if err != nil {
		t.Fatal(err)
	}
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = c.Close(); _ = peer.Close() })
	return c.(*tcpConn), peer
}

// publishPacket is a QoS 1 PUBLISH whose payload names its writer and
// sequence number, padded to size bytes.
func publishPacket(writer, seq, size int) *packets.ControlPacket {
	payload := make([]byte, max(size, 8))
	binary.BigEndian.PutUint32(payload, uint32(writer))
	binary.BigEndian.PutUint32(payload[4:], uint32(seq))
	cp := packets.NewControlPacket(packets.PUBLISH)
	p := cp.Content.(*packets.Publish)
	p.QoS, p.PacketID, p.Topic, p.Payload = 1, uint16(seq+1), fmt.Sprintf("w/%d", writer), payload
	p.Properties = &packets.Properties{User: []packets.User{{Key: "watermill_uuid", Value: fmt.Sprintf("%d-%d", writer, seq)}}}
	return cp
}

// Packets written by many goroutines at once arrive whole and in each
// writer's order, whatever their size, and packets larger than the read
// buffer are read back whole.
func TestTCPConnPackets(t *testing.T) {
	sizes := []struct {
		name       string
		size, each int
	}{
		{"small", 64, 500},
		{"gathered", 8 << 10, 100},
		{"larger than a gather", maxGather + 100, 20},
		{"larger than the read buffer", readBufferSize*2 + 7, 20},
	}
	for _, tc := range sizes {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := tcpPair(t)
			const writers = 8
			each := tc.each
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						if _, err := publishPacket(w, i, tc.size).WriteTo(c); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			// The peer echoes every packet back, so the read side is
			// checked too.
			echoDone := make(chan error, 1)
			go func() {
				for range writers * each {
					cp, err := packets.ReadPacket(peer)
					if err != nil {
						echoDone <- err
						return
					}
					if _, err := cp.WriteTo(peer); err != nil {
						echoDone <- err
						return
					}
				}
				echoDone <- nil
			}()
			next := make([]int, writers)
			for n := range writers * each {
				cp, err := packets.ReadPacket(c)
				if err != nil {
					t.Fatalf("packet %d: %v", n, err)
				}
				p := cp.Content.(*packets.Publish)
				w, seq := int(binary.BigEndian.Uint32(p.Payload)), int(binary.BigEndian.Uint32(p.Payload[4:]))
				if w >= writers || seq != next[w] {
					t.Fatalf("packet %d: writer %d sequence %d, want sequence %d", n, w, seq, next[w])
				}
				want := publishPacket(w, seq, tc.size).Content.(*packets.Publish)
				if !bytes.Equal(p.Payload, want.Payload) || p.Topic != want.Topic || p.Properties.User[0] != want.Properties.User[0] {
					t.Fatalf("packet %d (writer %d, sequence %d) arrived altered", n, w, seq)
				}
				next[w]++
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if err := <-echoDone; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A write to a connection the peer reset fails, closes the socket (so
// paho's reader ends and autopaho reconnects) and fails every later write.
func TestTCPConnWriteFailureCloses(t *testing.T) {
	c, peer := tcpPair(t)
	if err := peer.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	_ = peer.Close() // RST
	var err error
	for i := 0; err == nil && i < 1000; i++ {
		_, err = publishPacket(0, i, 1024).WriteTo(c)
	}
	// The error of the packet being flushed surfaces on the next write.
	if err == nil {
		t.Fatal("writes to a reset connection kept succeeding")
	}
	if _, again := publishPacket(0, 0, 64).WriteTo(c); !errors.Is(again, err) {
		t.Fatalf("write after a failed one: %v, want %v", again, err)
	}
	if _, rerr := c.Read(make([]byte, 1)); !errors.Is(rerr, net.ErrClosed) {
		t.Fatalf("read after a failed write: %v, want the socket closed", rerr)
	}
}

func TestPlainTCP(t *testing.T) {
	tests := []struct {
		servers []string
		want    bool
	}{
		{[]string{"mqtt://a:1883"}, true},
		{[]string{"tcp://a:1883", "mqtt://b:1883"}, true},
		{[]string{"mqtt://a:1883", "mqtts://b:8883"}, false},
		{[]string{"ws://a/mqtt"}, false},
		{[]string{"wss://a/mqtt"}, false},
		{nil, false},
	}
	for _, tt := range tests {
		cfg := Config{Servers: tt.servers}
		urls, err := cfg.serverURLs()
		if err != nil {
			t.Fatal(err)
		}
		if got := plainTCP(urls); got != tt.want {
			t.Errorf("plainTCP(%v) = %v, want %v", tt.servers, got, tt.want)
		}
	}
}

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// paho writes a batch of PUBACKs one by one; they reach the socket in a
// few writes, each within ackDelay, and a lone one is not held back.
func TestTCPConnAckBatch(t *testing.T) {
	c, peer := tcpPair(t)
	counting := &countingConn{Conn: c.Conn}
	c.Conn = counting
	const acks = 100
	for i := range acks {
		pa := packets.NewControlPacket(packets.PUBACK)
		pa.Content.(*packets.Puback).PacketID = uint16(i + 1)
		if _, err := pa.WriteTo(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := peer.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for i := range acks {
		cp, err := packets.ReadPacket(peer)
		if err != nil {
			t.Fatalf("PUBACK %d: %v", i, err)
		}
		if id := cp.Content.(*packets.Puback).PacketID; id != uint16(i+1) {
			t.Fatalf("PUBACK %d has packet ID %d", i, id)
		}
	}
	if n := counting.writes.Load(); n > acks/2 {
		t.Fatalf("%d PUBACKs took %d writes, want them gathered", acks, n)
	} else {
		t.Logf("%d PUBACKs in %d writes", acks, n)
	}
	// A PUBACK followed by another packet goes out with it at once.
	pa := packets.NewControlPacket(packets.PUBACK)
	pa.Content.(*packets.Puback).PacketID = 7
	if _, err := pa.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	if _, err := publishPacket(0, 0, 64).WriteTo(c); err != nil {
		t.Fatal(err)
	}
	for _, want := range []byte{packets.PUBACK, packets.PUBLISH} {
		cp, err := packets.ReadPacket(peer)
		if err != nil {
			t.Fatal(err)
		}
		if cp.Type != want {
			t.Fatalf("packet type %d, want %d", cp.Type, want)
		}
	}
}
