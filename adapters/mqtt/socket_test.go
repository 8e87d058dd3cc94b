package mqtt

import (
	"context"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
)

// A write the peer never reads (net.Pipe has no buffer: a stalled socket
// with its buffers full) ends when the close context's deadline passes,
// and no connection is handed out after that.
func TestCloseContextClosesSocket(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	var s socket
	dial := s.track(func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) { return client, nil })
	conn, err := dial(context.Background(), autopaho.ClientConfig{}, &url.URL{})
	if err != nil {
		t.Fatal(err)
	}
	written := make(chan error, 1)
	go func() {
		_, err := conn.Write([]byte("DISCONNECT"))
		written <- err
	}()
	ctx, done := Config{CloseTimeout: 100 * time.Millisecond}.closeContext(&s)
	defer done()
	select {
	case err := <-written:
		t.Fatalf("the write ended before the deadline: %v", err)
	case <-ctx.Done():
	}
	select {
	case err := <-written:
		if err == nil {
			t.Fatal("the blocked write succeeded; want it failed by the closed socket")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked write did not end 5 s after the close deadline")
	}
	if _, err := dial(context.Background(), autopaho.ClientConfig{}, &url.URL{}); !errors.Is(err, errClosing) {
		t.Fatalf("dial after the deadline: %v, want errClosing", err)
	}
}

// A Close that ends in time leaves the socket alone.
func TestCloseContextDoneInTime(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	var s socket
	if _, err := s.track(func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) { return client, nil })(context.Background(), autopaho.ClientConfig{}, &url.URL{}); err != nil {
		t.Fatal(err)
	}
	_, done := Config{CloseTimeout: time.Minute}.closeContext(&s)
	done()
	s.mu.Lock()
	aborted := s.aborted
	s.mu.Unlock()
	if aborted {
		t.Fatal("the socket was closed by a Close that ended in time")
	}
}
