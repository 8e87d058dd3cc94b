package integration

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy a test owns, for injecting network faults between a
// client and a shared broker without touching the broker.
type Proxy struct {
	target   string
	listener net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	refuse bool
	// flowing is closed while bytes are forwarded, open while stalled;
	// upFlowing the same for the client-to-target direction alone.
	flowing, upFlowing chan struct{}
	holding            int // pipes stalled with bytes read and not forwarded
	closed             chan struct{}
	wg                 sync.WaitGroup
}

// NewProxy listens on a free loopback port and forwards every connection to
// target. It is closed when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	return newProxy(t, target, nil)
}

// NewTLSProxy is NewProxy terminating TLS with cfg on its port: a client
// speaks TLS to it and the bytes inside go to target as they are.
func NewTLSProxy(t testing.TB, target string, cfg *tls.Config) *Proxy {
	t.Helper()
	return newProxy(t, target, cfg)
}

func newProxy(t testing.TB, target string, cfg *tls.Config) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	if cfg != nil {
		l = tls.NewListener(l, cfg)
	}
	p := &Proxy{target: target, listener: l, conns: map[net.Conn]struct{}{},
		flowing: make(chan struct{}), upFlowing: make(chan struct{}), closed: make(chan struct{})}
	close(p.flowing)
	close(p.upFlowing)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.listener.Addr().String() }

// Cut closes every open connection in both directions, like a network cut
// or a broker crash seen from the client.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// Refuse makes the proxy close new connections at once (true) or forward
// them again (false).
func (p *Proxy) Refuse(refuse bool) {
	p.mu.Lock()
	p.refuse = refuse
	p.mu.Unlock()
}

// Stall makes the proxy stop forwarding bytes in both directions (true),
// or forward them again (false), keeping every connection open: a peer
// that stops answering and reading, as a hung broker or a network that
// drops packets looks to a client. What a client writes meanwhile piles up
// in the socket buffers until its writes block. New connections are
// accepted and stall too.
func (p *Proxy) Stall(stall bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	setFlowing(&p.flowing, !stall)
}

// StallUp is Stall for what clients send alone: what the target sends
// still reaches them, as with a broker that delivers but no longer reads.
func (p *Proxy) StallUp(stall bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	setFlowing(&p.upFlowing, !stall)
}

// setFlowing closes *ch (flowing) or replaces a closed one (stalled).
func setFlowing(ch *chan struct{}, flowing bool) {
	select {
	case <-*ch:
		if !flowing {
			*ch = make(chan struct{})
		}
	default:
		if flowing {
			close(*ch)
		}
	}
}

// awaitFlowing waits while the proxy is stalled in the direction of up;
// false when it closed.
func (p *Proxy) awaitFlowing(up bool) bool {
	p.mu.Lock()
	flowing, upFlowing := p.flowing, p.upFlowing
	p.mu.Unlock()
	select {
	case <-flowing:
	case <-p.closed:
		return false
	}
	if !up {
		return true
	}
	select {
	case <-upFlowing:
		return true
	case <-p.closed:
		return false
	}
}

func (p *Proxy) hold(d int) {
	p.mu.Lock()
	p.holding += d
	p.mu.Unlock()
}

// AwaitHolding waits until the stalled proxy holds bytes a peer sent
// (something was written to it since the stall), for at most timeout; it
// reports whether it does.
func (p *Proxy) AwaitHolding(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		n := p.holding
		p.mu.Unlock()
		if n > 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond) // polling a counter of the proxy's goroutines
	}
}

// Conns is the number of client connections currently open.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) / 2
}

// Close stops listening, cuts every connection and waits for the proxy's
// goroutines.
func (p *Proxy) Close() {
	_ = p.listener.Close()
	p.mu.Lock()
	select {
	case <-p.closed:
	default:
		close(p.closed)
	}
	p.mu.Unlock()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			_ = client.Close()
			continue
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns[client] = struct{}{}
		p.conns[server] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(client, server, false)
		go p.pipe(server, client, true)
	}
}

// pipe copies src to dst; up is the client-to-target direction.
func (p *Proxy) pipe(dst, src net.Conn, up bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		// While stalled, what is read is held: one buffer's worth, after
		// which the sender's writes back up. The read is not put off until
		// the stall ends, so that bytes sent after the stall always show
		// in AwaitHolding, however late this goroutine came back from its
		// last write.
		n, err := src.Read(buf)
		if n > 0 {
			p.hold(1)
			flowing := p.awaitFlowing(up)
			p.hold(-1)
			if !flowing || writeAll(dst, buf[:n]) != nil {
				break
			}
		}
		if err != nil { // EOF, a cut or a reset alike
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

func writeAll(w io.Writer, b []byte) error {
	_, err := w.Write(b) // a net.Conn writes all of b or fails
	return err
}
