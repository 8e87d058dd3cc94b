package mqtt

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"golang.org/x/net/proxy"
)

// paho.golang reads a packet off the connection in three reads or more
// (the type byte, each byte of the remaining length, the rest). On a plain
// TCP socket each read is a system call, and a QoS 1 message is read twice
// (PUBLISH and PUBACK), so reads are buffered here. paho
// writes a packet as a list of buffers, one writev on a bare socket but
// one write per buffer on any wrapper, so tcpConn gathers them. A TLS or
// WebSocket connection buffers in its own layer, so only mqtt:// servers
// need tcpConn.

const (
	// readBufferSize is the read buffer of one connection: one system
	// call reads every packet that has arrived, up to this many bytes.
	readBufferSize = 32 << 10
	// maxGather bounds the bytes gathered for one write; a larger part
	// of a packet is written on its own.
	maxGather = 32 << 10
)

// plainTCP reports whether every server is reached over plain TCP.
func plainTCP(urls []*url.URL) bool {
	for _, u := range urls {
		switch strings.ToLower(u.Scheme) {
		case "mqtt", "tcp", "":
		default:
			return false
		}
	}
	return len(urls) > 0
}

// dialTCP is autopaho's AttemptConnection for mqtt:// servers: it dials as
// autopaho does (all_proxy is honoured) and returns a tcpConn.
func dialTCP(timeout time.Duration) func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) {
	return func(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
		// autopaho hands AttemptConnection its own context, not the one
		// bounded by ConnectTimeout.
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		c, err := proxy.Dial(ctx, "tcp", u.Host)
		if err != nil {
			return nil, err
		}
		return newTCPConn(c), nil
	}
}

// tlsOnly reports whether every server is reached over TLS on TCP.
func tlsOnly(urls []*url.URL) bool {
	for _, u := range urls {
		switch strings.ToLower(u.Scheme) {
		case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		default:
			return false
		}
	}
	return len(urls) > 0
}

// dialTLS is autopaho's own TLS connection (all_proxy honoured), made by
// the adapter so that it can close the socket (see socket).
func dialTLS(timeout time.Duration, cfg *tls.Config) func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) {
	return func(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		c, err := proxy.Dial(ctx, "tcp", u.Host)
		if err != nil {
			return nil, err
		}
		tc := cfg.Clone()
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		t := tls.Client(c, tc)
		if err := t.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, err
		}
		return packets.NewThreadSafeConn(t), nil
	}
}

// tcpConn gives paho one read system call per batch of packets and one
// write per packet, or per batch of acknowledgements.
//
// Reads go through a bufio.Reader; only paho's reader goroutine reads.
//
// Writes: paho's packets.ControlPacket.WriteTo locks a connection that is
// a sync.Locker while it writes the parts of one packet (autopaho asks
// AttemptConnection for such a connection). tcpConn gathers the parts
// while locked and writes them with one Write on Unlock. PUBACKs are the
// exception: the subscriber writes them one by one as handlers finish
// (every handled prefix of the arrival order at once), so they are held
// for ackDelay, and written with the ones after them or with the next
// other packet. A failed write
// closes the socket, so paho's reader fails and autopaho reconnects; what
// was not acknowledged is sent again or reported, as for any write the
// kernel accepted before the connection broke.
type tcpConn struct {
	net.Conn
	r *bufio.Reader

	mu       sync.Mutex // held by paho for the whole of one packet
	buf      []byte
	starting bool        // the next Write starts a packet (its fixed header)
	acksOnly bool        // buf holds PUBACKs only
	held     *time.Timer // writes held PUBACKs; nil when none are held
	err      error       // the first write error; later writes fail with it
}

// ackDelay bounds how long a PUBACK waits for the rest of its batch.
const ackDelay = 200 * time.Microsecond

func newTCPConn(c net.Conn) *tcpConn {
	return &tcpConn{Conn: c, r: bufio.NewReaderSize(c, readBufferSize)}
}

func (c *tcpConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Lock starts a packet.
func (c *tcpConn) Lock() {
	c.mu.Lock()
	c.starting = true
}

// Unlock writes what was gathered, unless it is PUBACKs only: those wait
// up to ackDelay for more.
func (c *tcpConn) Unlock() {
	if c.acksOnly && len(c.buf) < maxGather/2 {
		if c.held == nil {
			c.held = time.AfterFunc(ackDelay, c.writeHeld)
		}
	} else {
		_ = c.flush()
	}
	c.mu.Unlock()
}

func (c *tcpConn) writeHeld() {
	c.mu.Lock()
	c.held = nil
	_ = c.flush()
	c.mu.Unlock()
}

// Write gathers p. The caller holds the lock.
func (c *tcpConn) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.starting && len(p) > 0 {
		c.starting = false
		isAck := p[0]>>4 == packets.PUBACK
		c.acksOnly = isAck && (c.acksOnly || len(c.buf) == 0)
	}
	if len(c.buf)+len(p) > maxGather {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	if len(p) <= maxGather {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.fail(err)
	}
	return n, err
}

// flush writes what was gathered. The caller holds the lock.
func (c *tcpConn) flush() error {
	if c.held != nil {
		c.held.Stop()
		c.held = nil
	}
	c.acksOnly = false
	if len(c.buf) == 0 || c.err != nil {
		c.buf = c.buf[:0]
		return c.err
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		c.fail(err)
	}
	return err
}

func (c *tcpConn) fail(err error) {
	c.err = err
	_ = c.Conn.Close()
}
