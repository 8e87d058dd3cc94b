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
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/transport"
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

// Transport is one connection to RabbitMQ, kept up from Open until Close;
// every publisher and subscriber shares it, each with channels of its own.
type Transport struct {
	cfg     Config
	logger  watermill.LoggerAdapter
	dialURL string // carries the password: never print it
	tls     *tls.Config

	mu        sync.Mutex
	conn      *amqp.Connection // nil while down
	up        chan struct{}    // closed while conn is usable; replaced when it is lost
	downErr   error
	consumers map[*consumer]bool // registered consumers: consuming or not
	started   bool

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup // the connection supervisor
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
	dialURL, err := cfg.dialURL()
	if err != nil {
		return nil, err
	}
	tc, err := cfg.tlsConfig(dialURL)
	if err != nil {
		return nil, err
	}
	return &Transport{
		cfg: cfg, logger: logger, dialURL: dialURL, tls: tc,
		up: make(chan struct{}), consumers: map[*consumer]bool{}, closing: make(chan struct{}),
	}, nil
}

// Config returns the transport's configuration, defaults applied.
func (c *Transport) Config() Config { return c.cfg }

// Open opens the connection and declares the topology. Its error is the
// one a misconfiguration shows (wrong credentials, untrusted certificate,
// a queue that exists with other arguments). After it succeeds, the
// transport reconnects by itself until Close.
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
	conn, closed, err := c.dial()
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.started = true
	c.mu.Unlock()
	c.setUp(conn)
	c.wg.Add(1)
	go c.supervise(conn, closed)
	return nil
}

// dial connects and declares the topology.
func (c *Transport) dial() (*amqp.Connection, chan *amqp.Error, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(c.cfg.ConnectionName)
	conn, err := amqp.DialConfig(c.dialURL, amqp.Config{
		Heartbeat:       c.cfg.Heartbeat,
		Locale:          "en_US",
		Properties:      props,
		TLSClientConfig: c.tls,
		Dial:            amqp.DefaultDial(c.cfg.DialTimeout),
	})
	if err != nil {
		return nil, nil, c.dialError(err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	if err := declareTopology(conn, c.cfg); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, closed, nil
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
func (c *Transport) dialError(err error) error {
	target := URL(c.dialURL).Redacted()
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var ae *amqp.Error
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("connect %s: the broker's TLS certificate is not signed by a CA in tls.ca_file (or the system roots): %s", target, redact(err.Error(), c.dialURL))
	case errors.As(err, &hostname):
		return fmt.Errorf("connect %s: the broker's TLS certificate does not match the host; set tls.server_name to a name it carries: %s", target, redact(err.Error(), c.dialURL))
	case errors.As(err, &ae) && ae.Code == amqp.AccessRefused:
		return fmt.Errorf("connect %s: access refused: check user and password, and the user's permissions on the vhost", target)
	case strings.HasPrefix(c.dialURL, "amqps:") && c.cfg.TLS.CertFile == "" && isTLSRefusal(err):
		return fmt.Errorf("connect %s: the broker refused the TLS connection; it may require a client certificate: set tls.cert_file and tls.key_file (%s)", target, redact(err.Error(), c.dialURL))
	}
	return fmt.Errorf("connect %s: %s", target, redact(err.Error(), c.dialURL))
}

// supervise waits for the connection to drop and reconnects, until Close.
func (c *Transport) supervise(conn *amqp.Connection, closed chan *amqp.Error) {
	defer c.wg.Done()
	for {
		select {
		case <-c.closing:
			c.setDown(ErrClosed)
			_ = conn.Close()
			return
		case amqpErr := <-closed:
			err := error(ErrNotConnected)
			if amqpErr != nil {
				err = fmt.Errorf("%w: %s", ErrNotConnected, amqpErr.Error())
			}
			c.logger.Error("RabbitMQ connection lost; reconnecting", err, nil)
			c.setDown(err)
		}
		conn, closed = c.reconnect()
		if conn == nil {
			return
		}
	}
}

// reconnect dials with backoff until it succeeds or the transport closes.
func (c *Transport) reconnect() (*amqp.Connection, chan *amqp.Error) {
	b := newBackoff(c.cfg.Reconnect)
	for attempt := 1; ; attempt++ {
		if !b.wait(c.closing, nil) {
			return nil, nil
		}
		conn, closed, err := c.dial()
		if err != nil {
			c.logger.Error("RabbitMQ reconnect failed", err, watermill.LogFields{"attempt": attempt})
			c.mu.Lock()
			c.downErr = fmt.Errorf("%w: %w", ErrNotConnected, err)
			c.mu.Unlock()
			continue
		}
		c.logger.Info("RabbitMQ reconnected", watermill.LogFields{"attempt": attempt})
		c.setUp(conn)
		return conn, closed
	}
}

func (c *Transport) setUp(conn *amqp.Connection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	c.downErr = nil
	close(c.up)
}

func (c *Transport) setDown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return
	}
	c.conn = nil
	c.downErr = err
	c.up = make(chan struct{})
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

// Ready returns nil only while the connection is up and every consumer of
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

// Close closes the connection and stops reconnecting. Close publishers and
// subscribers first; it is safe to call more than once.
func (c *Transport) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
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
	_ transport.Defaulter      = (*Config)(nil)
	_ transport.Validator      = Config{}
	_ transport.OptionsChecker = Config{}
)
