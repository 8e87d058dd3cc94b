// Package rabbitmq is the RabbitMQ (AMQP 0-9-1) transport, on
// rabbitmq/amqp091-go behind watermill's Publisher and Subscriber
// interfaces.
//
// A Transport owns one connection: it declares the configured topology on
// every connect, reconnects with backoff after a loss, and reports
// readiness. Publishers send on long-lived channels in confirm mode with
// many confirms outstanding per channel (pipelined), so confirmed
// publishing costs no round trip per message. Subscribers honour the
// framework's stop protocol: cancelling a Subscribe context is basic.cancel,
// delivered messages stay settleable until Close, and Close requeues what
// is unsettled.
package rabbitmq

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/adapters/transport/queuedconn"
)

// Errors of the transport; match them with errors.Is.
var (
	// ErrClosed is returned by a closed transport, publisher or subscriber.
	ErrClosed = errors.New("rabbitmq: closed")
	// ErrNotConnected is returned by a publish while the connection is
	// down (after publish.outage_wait, if set).
	ErrNotConnected = errors.New("rabbitmq: not connected")
	// ErrUnroutable is returned for a mandatory message no queue took
	// (basic.return): no binding matched its routing key.
	ErrUnroutable = errors.New("rabbitmq: unroutable")
	// ErrNacked is returned when the broker refused a message (basic.nack),
	// e.g. a queue at max length with overflow reject-publish.
	ErrNacked = errors.New("rabbitmq: rejected by the broker")
	// ErrNotConfirmed is returned when the channel or connection closed, or
	// publish.confirm_timeout passed, before the broker confirmed a
	// message: it may or may not have been taken.
	ErrNotConfirmed = errors.New("rabbitmq: not confirmed")
)

// ErrBlocked is returned by a publish while the broker blocks the
// connection (a resource alarm: memory or disk) for longer than
// publish.confirm_timeout: the message was not sent.
var ErrBlocked = errors.New("rabbitmq: connection blocked by the broker")

// Transport is one connection to RabbitMQ, kept up from Open until Close;
// every publisher and subscriber shares it, each with channels of its own.
// With several nodes (Config.URLs) it is connected to one of them at a
// time and moves to another when that one is lost.
type Transport struct {
	cfg    Config
	logger watermill.LoggerAdapter
	nodes  []node

	mu        sync.Mutex
	conn      *amqp.Connection // nil while down
	node      int              // the node of conn, or of the connection lost last
	up        chan struct{}    // closed while conn is usable; replaced when it is lost
	downErr   error
	consumers map[*consumer]bool // registered consumers: consuming or not
	started   bool
	// A resource alarm: the broker blocked the connection (connection.blocked).
	blockedSince  time.Time     // zero while not blocked
	isBlocked     atomic.Bool   // !blockedSince.IsZero(), read without the lock
	blockedReason string        // the broker's reason
	blocked       chan struct{} // closed while blocked
	unblocked     chan struct{} // closed while not blocked
	// abandon is closed once a stop must not wait for the broker any
	// more (see Stopping); then every call still waiting for an answer is
	// ended by closing the connection's socket.
	abandon     chan struct{}
	abandonOnce sync.Once
	cutConn     *amqp.Connection // the connection cut last (see cut)

	closing   chan struct{}
	stopDial  context.CancelFunc // ends a connection attempt at Close
	dialCtx   context.Context
	closeOnce sync.Once
	wg        sync.WaitGroup // the connection supervisor and stop watchers
	delays    delays         // delayed retries (delay.go)
}

// node is one broker the transport may connect to.
type node struct {
	url  string // carries the password: never print it
	name string // the URL redacted: logs and errors
	addr string // host:port: metrics
	tls  *tls.Config
}

// New validates cfg and returns a transport; it connects nothing (Open
// does).
func New(cfg Config, logger watermill.LoggerAdapter) (*Transport, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	urls, err := cfg.dialURLs()
	if err != nil {
		return nil, err
	}
	var nodes []node
	for _, u := range urls {
		tc, err := cfg.tlsConfig(u)
		if err != nil {
			return nil, err
		}
		addr := ""
		if p, err := url.Parse(u); err == nil {
			addr = p.Host
		}
		nodes = append(nodes, node{url: u, name: URL(u).Redacted(), addr: addr, tls: tc})
	}
	dialCtx, stopDial := context.WithCancel(context.Background())
	unblocked := make(chan struct{})
	close(unblocked)
	return &Transport{
		cfg: cfg, logger: logger, nodes: nodes,
		up: make(chan struct{}), consumers: map[*consumer]bool{}, closing: make(chan struct{}),
		blocked: make(chan struct{}), unblocked: unblocked, abandon: make(chan struct{}),
		dialCtx: dialCtx, stopDial: stopDial,
	}, nil
}

// Config returns the transport's configuration, defaults applied.
func (c *Transport) Config() Config { return c.cfg }

// Node returns the node in use (its URL without the password), or the
// node lost last while reconnecting.
func (c *Transport) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[c.node].name
}

// Open connects to one of the nodes and declares the topology. Its error
// is the one a misconfiguration shows (wrong credentials, untrusted
// certificate, a queue that exists with other arguments); with several
// nodes, every node's. After it succeeds, the transport reconnects by
// itself until Close.
func (c *Transport) Open(ctx context.Context) error {
	c.mu.Lock()
	if c.started {
		c.mu.Unlock()
		return errors.New("rabbitmq: already connected")
	}
	c.mu.Unlock()
	select {
	case <-c.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	default:
	}
	l, err := c.dialRound(c.firstNode(-1))
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.started = true
	c.mu.Unlock()
	c.setUp(l)
	c.logger.Info("RabbitMQ connected", watermill.LogFields{"node": l.node.name})
	c.wg.Add(1)
	go c.supervise(l)
	return nil
}

// link is an open connection and what it notifies.
type link struct {
	conn    *amqp.Connection
	index   int
	node    node
	closed  chan *amqp.Error
	blocked chan amqp.Blocking
}

// firstNode picks the node a round of connection attempts starts from: a
// random one, so that replicas spread over the cluster, but not lost (the
// node just lost) unless it is the only one.
func (c *Transport) firstNode(lost int) int {
	n := len(c.nodes)
	if n == 1 {
		return 0
	}
	if lost < 0 {
		return rand.IntN(n)
	}
	return (lost + 1 + rand.IntN(n-1)) % n
}

// dialRound tries each node once, in turn from first; it returns the
// first connection made, or every node's error.
func (c *Transport) dialRound(first int) (link, error) {
	var errs []error
	for i := range c.nodes {
		select {
		case <-c.closing:
			return link{}, ErrClosed
		default:
		}
		idx := (first + i) % len(c.nodes)
		l, err := c.dial(idx)
		if err == nil {
			return l, nil
		}
		if len(c.nodes) > 1 && i < len(c.nodes)-1 {
			c.logger.Info("RabbitMQ node unreachable; trying the next", watermill.LogFields{"node": c.nodes[idx].name, "err": err.Error()})
		}
		errs = append(errs, err)
	}
	return link{}, errors.Join(errs...)
}

// dial connects to node idx and declares the topology.
func (c *Transport) dial(idx int) (link, error) {
	n := c.nodes[idx]
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(c.cfg.ConnectionName)
	conn, err := amqp.DialConfig(n.url, amqp.Config{
		Heartbeat:       c.cfg.Heartbeat,
		Locale:          "en_US",
		Properties:      props,
		TLSClientConfig: n.tls,
		Dial:            c.dialer(),
	})
	if err != nil {
		return link{}, dialError(n, c.cfg.TLS.CertFile, err)
	}
	l := link{
		conn: conn, index: idx, node: n,
		closed:  conn.NotifyClose(make(chan *amqp.Error, 1)),
		blocked: conn.NotifyBlocked(make(chan amqp.Blocking, 4)),
	}
	if err := declareTopology(conn, c.cfg); err != nil {
		_ = conn.CloseDeadline(time.Now().Add(c.cfg.DialTimeout))
		return link{}, fmt.Errorf("node %s: %w", n.name, err)
	}
	return l, nil
}

// dialer is amqp091-go's DefaultDial that Close also ends: a TCP connect
// bounded by dial_timeout, and a deadline on the TLS and AMQP handshakes.
// The socket's writes are queued (docs/rabbitmq.md, Writes).
func (c *Transport) dialer() func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: c.cfg.DialTimeout}
		conn, err := d.DialContext(c.dialCtx, network, addr)
		if err != nil {
			return nil, err
		}
		if err := conn.SetDeadline(time.Now().Add(c.cfg.DialTimeout)); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return queuedconn.New(conn), nil
	}
}

// isTLSRefusal reports a TLS alert from the broker, or a connection the
// broker closed during the AMQP handshake, as a broker that requires a
// client certificate does (with TLS 1.3 the alert can lose the race with
// the close: the client's reader takes the alert and closes the socket
// while its first write, the protocol header, is under way, which then
// fails with net.ErrClosed).
func isTLSRefusal(err error) bool {
	var ae *amqp.Error
	msg := err.Error()
	return strings.Contains(msg, "remote error: tls:") ||
		(errors.As(err, &ae) && ae.Code == amqp.ChannelError) ||
		errors.Is(err, amqp.ErrClosed) || errors.Is(err, net.ErrClosed)
}

// dialError explains the common failures and keeps the password out.
func dialError(n node, certFile string, err error) error {
	target := n.name
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var ae *amqp.Error
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("connect %s: the broker's TLS certificate is not signed by a CA in tls.ca_file (or the system roots): %s", target, redact(err.Error(), n.url))
	case errors.As(err, &hostname):
		return fmt.Errorf("connect %s: the broker's TLS certificate does not match the host; set tls.server_name to a name it carries: %s", target, redact(err.Error(), n.url))
	case errors.As(err, &ae) && ae.Code == amqp.AccessRefused:
		return fmt.Errorf("connect %s: access refused: check user and password, and the user's permissions on the vhost", target)
	case strings.HasPrefix(n.url, "amqps:") && certFile == "" && isTLSRefusal(err):
		return fmt.Errorf("connect %s: the broker refused the TLS connection; it may require a client certificate: set tls.cert_file and tls.key_file (%s)", target, redact(err.Error(), n.url))
	}
	return fmt.Errorf("connect %s: %s", target, redact(err.Error(), n.url))
}

// supervise follows the connection (alarms, loss) and reconnects, until
// Close.
func (c *Transport) supervise(l link) {
	defer c.wg.Done()
	for {
		select {
		case <-c.closing:
			c.setDown(ErrClosed)
			c.closeConn(l.conn)
			return
		case b, ok := <-l.blocked:
			if !ok { // the connection shut down: closed tells why
				l.blocked = nil
				continue
			}
			c.setBlocked(l.node, b)
			continue
		case amqpErr := <-l.closed:
			err := error(ErrNotConnected)
			if amqpErr != nil {
				err = fmt.Errorf("%w: %s", ErrNotConnected, amqpErr.Error())
			}
			c.mu.Lock()
			wasCut := c.cutConn == l.conn
			c.mu.Unlock()
			if wasCut {
				c.logger.Info("RabbitMQ connection closed by the client; reconnecting", watermill.LogFields{"node": l.node.name})
			} else {
				c.logger.Error("RabbitMQ connection lost; reconnecting", err, watermill.LogFields{"node": l.node.name})
			}
			c.setDown(err)
		}
		var ok bool
		if l, ok = c.reconnect(l.index); !ok {
			return
		}
	}
}

// reconnect tries the nodes in turn, the lost one last, with backoff
// between full rounds, until it connects or the transport closes.
func (c *Transport) reconnect(lost int) (link, bool) {
	b := newBackoff(c.cfg.Reconnect)
	for attempt := 1; ; attempt++ {
		if !b.wait(c.closing, nil) {
			return link{}, false
		}
		l, err := c.dialRound(c.firstNode(lost))
		if errors.Is(err, ErrClosed) {
			return link{}, false
		}
		if err != nil {
			c.logger.Error("RabbitMQ reconnect failed", err, watermill.LogFields{"attempt": attempt})
			c.mu.Lock()
			c.downErr = fmt.Errorf("%w: %w", ErrNotConnected, err)
			c.mu.Unlock()
			continue
		}
		c.logger.Info("RabbitMQ reconnected", watermill.LogFields{"attempt": attempt, "node": l.node.name})
		c.setUp(l)
		return l, true
	}
}

func (c *Transport) setUp(l link) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = l.conn
	c.node = l.index
	c.downErr = nil
	close(c.up)
}

func (c *Transport) setDown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearBlockedLocked()
	if c.conn == nil {
		return
	}
	c.conn = nil
	c.downErr = err
	c.up = make(chan struct{})
}

// setBlocked records connection.blocked and connection.unblocked: a
// warning with the broker's reason once per episode, and a note when it
// ends.
func (c *Transport) setBlocked(n node, b amqp.Blocking) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case b.Active && c.blockedSince.IsZero():
		c.blockedSince, c.blockedReason = time.Now(), b.Reason
		c.isBlocked.Store(true)
		close(c.blocked)
		c.unblocked = make(chan struct{})
		c.warn("RabbitMQ blocked the connection (a resource alarm); publishes wait until it clears", watermill.LogFields{"node": n.name, "reason": b.Reason})
	case !b.Active && !c.blockedSince.IsZero():
		c.logger.Info("RabbitMQ unblocked the connection", watermill.LogFields{"node": n.name, "blocked_for": time.Since(c.blockedSince).Round(time.Millisecond).String()})
		c.clearBlockedLocked()
	}
}

// clearBlockedLocked ends a blocked episode; c.mu is held.
func (c *Transport) clearBlockedLocked() {
	if c.blockedSince.IsZero() {
		return
	}
	c.blockedSince, c.blockedReason = time.Time{}, ""
	c.isBlocked.Store(false)
	close(c.unblocked)
	c.blocked = make(chan struct{})
}

// warn logs at WARN when the logger has that level (watermill's
// LoggerAdapter has none), else as an error.
func (c *Transport) warn(msg string, fields watermill.LogFields) {
	if w, ok := c.logger.(interface {
		Warn(string, watermill.LogFields)
	}); ok {
		w.Warn(msg, fields)
		return
	}
	c.logger.Error(msg, nil, fields)
}

// Blocked reports whether the broker blocks the connection, and since
// when.
func (c *Transport) Blocked() (bool, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.blockedSince.IsZero(), c.blockedSince
}

// awaitUnblocked returns nil at once while the connection is not blocked;
// otherwise it waits until it is unblocked, and fails with ErrBlocked
// when deadline fires, ctx ends or the transport stops first.
func (c *Transport) awaitUnblocked(ctx context.Context, deadline func() <-chan time.Time) error {
	if !c.isBlocked.Load() {
		return nil
	}
	c.mu.Lock()
	unblocked, since, reason := c.unblocked, c.blockedSince, c.blockedReason
	c.mu.Unlock()
	if since.IsZero() {
		return nil
	}
	fail := func(why string) error {
		return fmt.Errorf("%w (%s) for %s; %s", ErrBlocked, reason, time.Since(since).Round(time.Millisecond), why)
	}
	select {
	case <-unblocked:
		return nil
	case <-deadline():
		return fail("publish.confirm_timeout passed")
	case <-ctx.Done():
		return fail("the publish was given up: " + ctx.Err().Error())
	case <-c.closing:
		return fail("the transport closed")
	case <-c.abandon:
		return fail("stopping")
	}
}

// blockedNote explains a missing confirm while the broker blocks the
// connection; "" otherwise.
func (c *Transport) blockedNote() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.blockedSince.IsZero() {
		return ""
	}
	return fmt.Sprintf(" (the broker blocked the connection %s ago: %s)", time.Since(c.blockedSince).Round(time.Millisecond), c.blockedReason)
}

// connection returns the open connection. While down it waits up to wait
// (forever when wait < 0) for the reconnect, or until ctx ends or the
// transport closes.
func (c *Transport) connection(ctx context.Context, wait time.Duration) (*amqp.Connection, error) {
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		c.mu.Lock()
		conn, up, downErr, started := c.conn, c.up, c.downErr, c.started
		c.mu.Unlock()
		if conn != nil && !conn.IsClosed() {
			return conn, nil
		}
		if !started {
			return nil, errors.New("rabbitmq: not connected yet; call Open first")
		}
		if downErr == nil {
			downErr = ErrNotConnected
		}
		if wait == 0 {
			return nil, downErr
		}
		select {
		case <-up:
		case <-deadline:
			return nil, downErr
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.closing:
			return nil, ErrClosed
		}
		if conn != nil { // closed but not yet noticed by the supervisor
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Ready returns nil only while the connection is up, not blocked by the
// broker for longer than blocked_unready_after, and every consumer of
// every open subscription is consuming.
func (c *Transport) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil || c.conn.IsClosed() {
		if c.downErr != nil {
			return c.downErr
		}
		return ErrNotConnected
	}
	if !c.blockedSince.IsZero() {
		if d := time.Since(c.blockedSince); d >= c.cfg.BlockedUnreadyAfter {
			return fmt.Errorf("%w (%s) for %s: node %s", ErrBlocked, c.blockedReason, d.Round(time.Second), c.nodes[c.node].name)
		}
	}
	for k, consuming := range c.consumers {
		if !consuming {
			return fmt.Errorf("rabbitmq: consumer %s of queue %q is not consuming", k.tag, k.queue)
		}
	}
	return nil
}

func (c *Transport) setConsuming(k *consumer, consuming bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.consumers[k] = consuming
}

func (c *Transport) unregister(k *consumer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.consumers, k)
}

// Stopping tells the transport that the stop protocol began and that ctx
// bounds it: from then on, a call that waits for the broker's answer on
// a close path (basic.cancel, channel.close, connection.close) is given
// up on once the connection is blocked by a resource alarm (the broker
// reads nothing from a blocked connection until the alarm clears) or
// shortly before ctx's deadline; the connection's socket is closed then,
// which ends every such call, and the broker requeues what is unsettled.
func (c *Transport) Stopping(ctx context.Context) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return
	}
	// Leave the caller a margin to return before its own deadline.
	margin := min(time.Second, time.Until(deadline)/4)
	timer := time.NewTimer(time.Until(deadline) - margin)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer timer.Stop()
		select {
		case <-timer.C:
			c.abandonStop("the stop's deadline is near")
		case <-ctx.Done():
			c.abandonStop("the stop's deadline passed")
		case <-c.closing:
		}
	}()
}

// abandonStop gives up waiting for the broker on the close paths for the
// rest of the stop.
func (c *Transport) abandonStop(why string) {
	c.abandonOnce.Do(func() {
		close(c.abandon)
		c.cut(why)
	})
}

// cut closes the connection's socket: every call waiting for the broker
// returns ErrClosed at once, and the broker requeues what the connection
// left unsettled. The supervisor reconnects unless the transport closes.
func (c *Transport) cut(why string) {
	c.mu.Lock()
	conn, n := c.conn, c.nodes[c.node]
	if conn != nil {
		c.cutConn = conn
	}
	c.mu.Unlock()
	if conn == nil || conn.IsClosed() {
		return
	}
	c.logger.Info("RabbitMQ cannot answer a close: closing the connection's socket", watermill.LogFields{"node": n.name, "why": why})
	// A deadline in the past fails every read and write at once.
	_ = conn.CloseDeadline(time.Now())
}

// bounded runs call, a close-path call that waits for the broker's
// answer, and returns its error. While the connection is blocked by a
// resource alarm the broker will not answer until the alarm clears, and
// once the stop is abandoned it must not be waited for: the connection's
// socket is closed then, which ends the call.
func (c *Transport) bounded(call func() error) error {
	c.mu.Lock()
	blocked := c.blocked
	c.mu.Unlock()
	// The goroutine is bounded's own: every path waits for it below. (It
	// is not counted in c.wg: bounded runs on consumers that may outlive
	// the start of Close, and a WaitGroup must not grow while waited on.)
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return err
	case <-blocked:
		c.cut("the connection is blocked by a resource alarm")
	case <-c.abandon:
		c.cut("the stop's deadline is near")
	}
	return <-done
}

// closeConn closes conn: at once while it is blocked or the stop was
// abandoned, else with the close handshake bounded by dial_timeout.
func (c *Transport) closeConn(conn *amqp.Connection) {
	c.mu.Lock()
	blocked := !c.blockedSince.IsZero()
	c.mu.Unlock()
	select {
	case <-c.abandon:
		blocked = true
	default:
	}
	if blocked {
		_ = conn.CloseDeadline(time.Now())
		return
	}
	_ = conn.CloseDeadline(time.Now().Add(c.cfg.DialTimeout))
}

// Close closes the connection and stops reconnecting. Close publishers and
// subscribers first; it is safe to call more than once.
func (c *Transport) Close() error {
	c.closeDelays()
	c.closeOnce.Do(func() {
		close(c.closing)
		c.stopDial()
	})
	c.wg.Wait()
	return nil
}

// backoff is an exponential backoff; wait sleeps the next interval.
type backoff struct {
	cfg  ReconnectConfig
	next time.Duration
}

func newBackoff(cfg ReconnectConfig) *backoff { return &backoff{cfg: cfg, next: cfg.InitialInterval} }

func (b *backoff) reset() { b.next = b.cfg.InitialInterval }

// wait sleeps the next interval; false when stop or done closed first.
func (b *backoff) wait(stop <-chan struct{}, done <-chan struct{}) bool {
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(time.Duration(float64(b.next)*b.cfg.Multiplier), b.cfg.MaxInterval)
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	case <-done:
		return false
	}
}

// The contract with the runtime (adapters/transport).
var (
	_ transport.Transport      = (*Transport)(nil)
	_ transport.TargetChecker  = (*Transport)(nil)
	_ transport.Stopper        = (*Transport)(nil)
	_ transport.Defaulter      = (*Config)(nil)
	_ transport.Validator      = Config{}
	_ transport.OptionsChecker = Config{}
)

// The transport's metrics; the runtime registers them with the label
// transport and its metric namespace.
var (
	blockedDesc = prometheus.NewDesc("transport_blocked",
		"1 while the broker blocks the transport's connection (a resource alarm: memory or disk), else 0", nil, nil)
	nodeDesc = prometheus.NewDesc("transport_node",
		"1 for the broker node (host:port) the transport is connected to, 0 for its other nodes", []string{"node"}, nil)
)

var _ prometheus.Collector = (*Transport)(nil)

// Describe implements prometheus.Collector.
func (c *Transport) Describe(ch chan<- *prometheus.Desc) {
	ch <- blockedDesc
	ch <- nodeDesc
}

// Collect implements prometheus.Collector.
func (c *Transport) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	blocked, connected, current := !c.blockedSince.IsZero(), c.conn != nil, c.node
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(blockedDesc, prometheus.GaugeValue, boolValue(blocked))
	for i, n := range c.nodes {
		ch <- prometheus.MustNewConstMetric(nodeDesc, prometheus.GaugeValue, boolValue(connected && i == current), n.addr)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
