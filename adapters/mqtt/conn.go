package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"

	"github.com/hexmill/hexmill/adapters/transport/tlsfiles"
)

// connOptions are what differs between the publisher's and a subscriber's
// connection.
type connOptions struct {
	clientID string
	// persistent: clean start false and Config.SessionExpiry; otherwise a
	// clean session that ends with the connection.
	persistent bool
	// receiveMaximum is announced in CONNECT (0: not announced).
	receiveMaximum uint16
	onPublish      func(paho.PublishReceived) (bool, error)
	onUp           func(*autopaho.ConnectionManager, *paho.Connack)
	onDown         func() bool
	// session decides when a received PUBLISH is acknowledged (see
	// ackSession); nil is paho's, which acks it as soon as the
	// OnPublishReceived handlers returned.
	session session.SessionManager
	// lastErr records the latest failed connection attempt.
	lastErr *lastError
	// socket, if not nil, tracks the network connection, for a Close
	// that must end on time (closeContext).
	socket *socket
}

// errClosing fails a connection attempt made after Close gave up on the
// clean disconnect.
var errClosing = errors.New("mqtt: closing")

// socket is the network connection under one connection manager, which a
// Close closes when its clean end (acks flushed, DISCONNECT) does not
// finish within close_timeout: paho writes without a deadline, so a
// socket that accepts no more bytes (a stalled broker or network, a full
// send buffer) would hold every write, and the Close waiting for them,
// until the keepalive gives up on the connection (up to twice keepalive).
// Closing it fails those writes at once.
type socket struct {
	// onAbort, if not nil, runs once abort has closed the connection.
	onAbort func()

	mu      sync.Mutex
	conn    net.Conn
	aborted bool
}

// track wraps an AttemptConnection so that the socket knows its
// connection; after abort no new connection is handed out.
func (s *socket) track(dial func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error)) func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) {
	return func(ctx context.Context, cc autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
		c, err := dial(ctx, cc, u)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.aborted {
			_ = c.Close()
			return nil, errClosing
		}
		s.conn = c
		return c, nil
	}
}

// abort closes the connection and refuses new ones.
func (s *socket) abort() {
	s.mu.Lock()
	s.aborted = true
	if s.conn != nil {
		_ = s.conn.Close()
	}
	s.mu.Unlock()
	if s.onAbort != nil {
		s.onAbort()
	}
}

// closeContext is the context a Close runs in: it ends after
// close_timeout, and then the socket is closed (see socket). done
// releases it.
func (c Config) closeContext(s *socket) (ctx context.Context, done func()) {
	ctx, cancel := context.WithTimeout(context.Background(), c.CloseTimeout)
	stop := context.AfterFunc(ctx, s.abort)
	return ctx, func() {
		stop() // before cancel, which would run abort
		cancel()
	}
}

// lastError keeps the latest connection failure, for errors that say why
// there is no connection (wrong CA, refused credentials, ...).
type lastError struct {
	mu  sync.Mutex
	err error
}

func (l *lastError) set(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

// wrap adds the latest connection failure to err.
func (l *lastError) wrap(err error) error {
	if l == nil {
		return err
	}
	l.mu.Lock()
	last := l.err
	l.mu.Unlock()
	if last == nil {
		return err
	}
	return fmt.Errorf("%w (last connection attempt: %v)", err, last)
}

// tlsConfig builds the TLS configuration for mqtts:// and wss:// servers.
func (c Config) tlsConfig() (*tls.Config, error) {
	tc, err := tlsfiles.Files{CAFile: c.TLS.CAFile, CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, ServerName: c.TLS.ServerName}.Config()
	if err != nil {
		return nil, err
	}
	tc.InsecureSkipVerify = c.TLS.InsecureSkipVerify //nolint:gosec // opt-in, documented as tests only
	return tc, nil
}

func (c Config) serverURLs() ([]*url.URL, error) {
	urls := make([]*url.URL, 0, len(c.Servers))
	for i, s := range c.Servers {
		u, err := url.Parse(s)
		if err != nil {
			// Not %w: url.Error quotes the URL, which may hold a password.
			return nil, fmt.Errorf("servers: item %d does not parse as a URL", i+1)
		}
		urls = append(urls, u)
	}
	return urls, nil
}

// reconnectBackoff is exponential from ReconnectMin to ReconnectMax with
// jitter; attempt 0 (the first connection) does not wait.
func (c Config) reconnectBackoff(attempt int) time.Duration {
	if attempt == 0 {
		return 0
	}
	d := c.ReconnectMin
	for i := 1; i < attempt && d < c.ReconnectMax; i++ {
		d *= 2
	}
	d = min(d, c.ReconnectMax)
	return d/2 + rand.N(d/2+1) //nolint:gosec // jitter
}

// nackBackoff is the delay before the attempts-th redelivery of a nacked
// message.
func (c Config) nackBackoff(attempts int) time.Duration {
	d := c.NackBackoffMin
	for i := 1; i < attempts && d < c.NackBackoffMax; i++ {
		d *= 2
	}
	return min(d, c.NackBackoffMax)
}

// clientConfig is the autopaho configuration of one connection.
func (c Config) clientConfig(o connOptions, logger watermill.LoggerAdapter) (autopaho.ClientConfig, error) {
	urls, err := c.serverURLs()
	if err != nil {
		return autopaho.ClientConfig{}, err
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return autopaho.ClientConfig{}, err
	}
	cc := autopaho.ClientConfig{
		ServerUrls:                    urls,
		TlsCfg:                        tc,
		KeepAlive:                     uint16(c.KeepAlive / time.Second),
		CleanStartOnInitialConnection: !o.persistent,
		ConnectTimeout:                c.ConnectTimeout,
		ReconnectBackoff:              c.reconnectBackoff,
		ConnectUsername:               c.Username,
		OnConnectionDown:              o.onDown,
		OnConnectError: func(err error) {
			if o.lastErr != nil {
				o.lastErr.set(err)
			}
			logger.Error("MQTT connect attempt failed; retrying", err, nil)
		},
		Errors:     pahoLogger{logger},
		PahoErrors: pahoLogger{logger},
		ClientConfig: paho.ClientConfig{
			ClientID:          o.clientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){},
			PacketTimeout:     c.PublishTimeout,
			Session:           o.session,
			OnServerDisconnect: func(d *paho.Disconnect) {
				reason := ""
				if d.Properties != nil {
					reason = d.Properties.ReasonString
				}
				logger.Error("MQTT broker disconnected us", fmt.Errorf("reason code 0x%02x %s", d.ReasonCode, reason),
					watermill.LogFields{"hint": "0x8e means another connection took over this client ID: make client_id unique per replica"})
			},
			OnClientError: func(err error) {
				logger.Debug("MQTT connection error", watermill.LogFields{"err": err.Error()})
			},
		},
	}
	switch {
	case plainTCP(urls):
		cc.AttemptConnection = dialTCP(c.ConnectTimeout)
	case tlsOnly(urls):
		cc.AttemptConnection = dialTLS(c.ConnectTimeout, tc)
	}
	// ws:// and wss:// are dialled by autopaho, out of the socket's reach.
	if o.socket != nil && cc.AttemptConnection != nil {
		cc.AttemptConnection = o.socket.track(cc.AttemptConnection)
	}
	if c.Password != "" {
		cc.ConnectPassword = []byte(c.Password.Reveal())
	}
	if o.onPublish != nil {
		cc.OnPublishReceived = append(cc.OnPublishReceived, o.onPublish)
	}
	if o.persistent {
		cc.SessionExpiryInterval = uint32(c.SessionExpiry / time.Second)
	}
	// autopaho tries the servers in turn and builds a CONNECT for each
	// attempt: the last one built is the server a connection is up with.
	var server atomic.Pointer[url.URL]
	rm := o.receiveMaximum
	cc.ConnectPacketBuilder = func(cp *paho.Connect, u *url.URL) (*paho.Connect, error) {
		server.Store(u)
		if rm > 0 {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.ReceiveMaximum = &rm
		}
		return cp, nil
	}
	cc.OnConnectionUp = func(cm *autopaho.ConnectionManager, ca *paho.Connack) {
		fields := watermill.LogFields{"session_present": ca.SessionPresent}
		if u := server.Load(); u != nil {
			fields["server"] = u.Redacted()
		}
		logger.Info("MQTT connected", fields)
		if o.onUp != nil {
			o.onUp(cm, ca)
		}
	}
	return cc, nil
}

// connect starts a connection manager; it connects (and reconnects) in the
// background until Disconnect.
func connect(cc autopaho.ClientConfig) (*autopaho.ConnectionManager, error) {
	cm, err := autopaho.NewConnection(context.Background(), cc)
	if err != nil {
		return nil, fmt.Errorf("mqtt: connect: %w", err)
	}
	return cm, nil
}

// pahoLogger passes paho's error log to watermill's logger at debug level:
// paho reports every dropped connection there, and the adapter logs what
// matters itself.
type pahoLogger struct{ l watermill.LoggerAdapter }

func (p pahoLogger) Println(v ...any) { p.l.Debug(fmt.Sprint(v...), nil) }
func (p pahoLogger) Printf(format string, v ...any) {
	p.l.Debug(fmt.Sprintf(format, v...), nil)
}
