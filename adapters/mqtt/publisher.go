package mqtt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"

	"github.com/hexmill/hexmill/ports"
)

// PropertyUUID is the MQTT v5 user property that carries the watermill
// message UUID. Every other metadata entry travels as a user property of
// its own name, except ports.MetadataContentType (the Content Type property) and
// ports.MetadataCorrelationID (the Correlation Data property).
const PropertyUUID = "watermill_uuid"

// ErrClosed is returned by a closed publisher or subscriber.
var ErrClosed = errors.New("mqtt: closed")

// ErrNoSubscribers is returned, wrapped, by a mandatory publish (option
// "mandatory") that the broker answered with reason code 0x10: no
// subscription matched, and the broker dropped the message.
var ErrNoSubscribers = errors.New("no matching subscribers: the broker dropped the message (reason code 0x10)")

// errConnectionLost ends a publish whose connection dropped before the
// broker's PUBACK/PUBCOMP: the broker may or may not have the message.
var errConnectionLost = errors.New("connection lost before the broker confirmed the message; publish it again")

// Publisher publishes watermill messages as MQTT v5 PUBLISH packets. It
// returns once the broker has taken each message: for QoS 1 and 2 after
// PUBACK / PUBCOMP, with the broker's reason code as an error when it
// refuses.
//
// Publishers made by WithOptions share their parent's connection; only the
// parent's Close disconnects it.
type Publisher struct {
	conn *pubConn
	opts PublishOptions
	// owner is true for the publisher that owns the connection.
	owner bool
}

type pubConn struct {
	cfg     Config
	logger  watermill.LoggerAdapter
	cm      *autopaho.ConnectionManager
	release func()
	// live is the current connection, or the next one while there is
	// none. Its context ends when that connection drops: paho forgets a
	// clean session's pending PUBACKs when the connection is lost, and a
	// publish waiting for one would otherwise wait out the whole
	// PublishTimeout. It is replaced in OnConnectionDown rather than in
	// OnConnectionUp because autopaho lets AwaitConnection return before
	// OnConnectionUp runs: a publish must never go out on a connection
	// without a context that ends with it.
	live    atomic.Pointer[liveConn]
	up      atomic.Bool // between OnConnectionUp and OnConnectionDown
	lastErr lastError
	// sock is closed when Close runs out of close_timeout; aborted ends
	// then, and with it every publish still waiting for a connection.
	sock    socket
	aborted context.Context

	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup // publishes in progress
}

// liveConn is one connection of a publisher; ctx ends when it drops.
type liveConn struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func newLiveConn() *liveConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &liveConn{ctx: ctx, cancel: cancel}
}

// dropped ends the current connection's context and makes the next one's.
func (c *pubConn) dropped() {
	c.live.Swap(newLiveConn()).cancel()
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher connects a publisher (in the background: Publish waits for
// the connection up to Config.PublishTimeout). Its session is clean: the
// publisher keeps nothing across connections; a publish interrupted by a
// dropped connection returns an error and the caller retries.
func NewPublisher(cfg Config, logger watermill.LoggerAdapter) (*Publisher, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	opts, err := cfg.ParsePublishOptions(nil)
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	id, release := cfg.claimClientID("pub")
	logger = logger.With(watermill.LogFields{"client_id": id})
	c := &pubConn{cfg: cfg, logger: logger, release: release}
	c.live.Store(newLiveConn())
	var abort context.CancelFunc
	c.aborted, abort = context.WithCancel(context.Background())
	c.sock.onAbort = abort
	cc, err := cfg.clientConfig(connOptions{
		clientID: id,
		lastErr:  &c.lastErr,
		socket:   &c.sock,
		onUp:     func(*autopaho.ConnectionManager, *paho.Connack) { c.up.Store(true) },
		onDown: func() bool {
			c.up.Store(false)
			c.dropped()
			return true
		},
	}, logger)
	if err != nil {
		release()
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	if c.cm, err = connect(cc); err != nil {
		release()
		return nil, err
	}
	return &Publisher{conn: c, opts: opts, owner: true}, nil
}

// WithOptions returns a publisher on the same connection with an event
// binding's options ("qos", "retain"); unknown keys are an error.
func (p *Publisher) WithOptions(options map[string]string) (*Publisher, error) {
	opts, err := p.conn.cfg.ParsePublishOptions(options)
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	return &Publisher{conn: p.conn, opts: opts}, nil
}

// Publish implements message.Publisher. It refuses $share/ and wildcard
// topics before anything reaches the broker.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if err := checkPublishTopic(topic); err != nil {
		return fmt.Errorf("mqtt: publish: %w", err)
	}
	c := p.conn
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return ErrClosed
	}
	c.wg.Add(1)
	c.mu.RUnlock()
	defer c.wg.Done()

	for _, msg := range msgs {
		if err := c.publish(topic, p.opts, msg); err != nil {
			return err
		}
	}
	return nil
}

func (c *pubConn) publish(topic string, o PublishOptions, msg *message.Message) error {
	pub := &paho.Publish{
		Topic:   topic,
		QoS:     o.QoS,
		Retain:  o.Retain,
		Payload: msg.Payload,
		Properties: &paho.PublishProperties{
			User: make(paho.UserProperties, 0, len(msg.Metadata)+1),
		},
	}
	pub.Properties.User.Add(PropertyUUID, validUTF8(msg.UUID))
	for k, v := range msg.Metadata {
		switch k {
		case ports.MetadataContentType:
			pub.Properties.ContentType = validUTF8(v)
		case ports.MetadataCorrelationID:
			pub.Properties.CorrelationData = []byte(v) // binary in MQTT
		case ports.MetadataTopic:
			// where the message came from; the subscriber sets its own
		default:
			pub.Properties.User.Add(validUTF8(k), validUTF8(v))
		}
	}

	// Fast path, while the connection is up: paho bounds the wait for a
	// packet ID and for PUBACK/PUBCOMP by PacketTimeout (= PublishTimeout),
	// so the connection's context is enough (one per publish costs a timer
	// and its garbage), unless the message's context can end: a publish
	// ends with it (the outbox relay's at the stop's deadline, a
	// handler's when the stop gives up on it).
	msgDone := msg.Context().Done() != nil
	if l := c.live.Load(); l.ctx.Err() == nil {
		ctx := l.ctx
		if msgDone {
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(ctx)
			defer context.AfterFunc(msg.Context(), cancel)()
			defer cancel()
		}
		resp, err := c.cm.Publish(ctx, pub)
		if err != nil && msgDone && msg.Context().Err() != nil {
			return fmt.Errorf("mqtt: publish %s to %s: the message's context ended: %w", msg.UUID, topic, msg.Context().Err())
		}
		if !connectionDown(err) {
			return publishResult(o, msg, topic, resp, err, l.ctx)
		}
	}
	ctx, cancel := context.WithTimeout(c.aborted, c.cfg.PublishTimeout)
	defer cancel()
	if msgDone {
		defer context.AfterFunc(msg.Context(), cancel)()
	}
	for {
		if err := c.cm.AwaitConnection(ctx); err != nil {
			if msgDone && msg.Context().Err() != nil {
				return fmt.Errorf("mqtt: publish %s to %s: the message's context ended: %w", msg.UUID, topic, msg.Context().Err())
			}
			return c.lastErr.wrap(fmt.Errorf("mqtt: publish %s to %s: no connection to the broker: %w", msg.UUID, topic, err))
		}
		// The connection AwaitConnection saw, or a later one: if it has
		// dropped since, its successor is not up and the publish sends
		// nothing.
		l := c.live.Load()
		pctx, pcancel := context.WithCancel(ctx)
		stop := context.AfterFunc(l.ctx, pcancel)
		resp, err := c.cm.Publish(pctx, pub)
		stop()
		pcancel()
		if err != nil && msgDone && msg.Context().Err() != nil {
			return fmt.Errorf("mqtt: publish %s to %s: the message's context ended: %w", msg.UUID, topic, msg.Context().Err())
		}
		if connectionDown(err) {
			continue // dropped between the wait and the publish: nothing was sent
		}
		return publishResult(o, msg, topic, resp, err, l.ctx)
	}
}

// connectionDown reports an error of a publish that sent nothing because
// there was no connection.
func connectionDown(err error) bool {
	return err != nil && (errors.Is(err, autopaho.ConnectionDownError) || errors.Is(err, session.ErrNoConnection))
}

// publishResult is the outcome of a publish on the connection whose
// context is conn.
func publishResult(o PublishOptions, msg *message.Message, topic string, resp *paho.PublishResponse, err error, conn context.Context) error {
	if err != nil && conn.Err() != nil && errors.Is(err, context.Canceled) {
		return fmt.Errorf("mqtt: publish %s to %s: %w", msg.UUID, topic, errConnectionLost)
	}
	if o.Mandatory && err == nil && resp != nil && resp.ReasonCode == 0x10 {
		return fmt.Errorf("mqtt: publish %s to %s: %w", msg.UUID, topic, ErrNoSubscribers)
	}
	if resp != nil && resp.ReasonCode >= 0x80 {
		reason := ""
		if resp.Properties != nil && resp.Properties.ReasonString != "" {
			reason = " (" + resp.Properties.ReasonString + ")"
		}
		return fmt.Errorf("mqtt: publish %s to %s: broker refused with reason code 0x%02x%s", msg.UUID, topic, resp.ReasonCode, reason)
	}
	if err != nil {
		return fmt.Errorf("mqtt: publish %s to %s: %w", msg.UUID, topic, err)
	}
	return nil
}

// Ready reports nil while the publisher's connection is up.
func (p *Publisher) Ready() error {
	if !p.conn.up.Load() {
		return p.conn.lastErr.wrap(errors.New("mqtt: publisher not connected to the broker"))
	}
	return nil
}

// Close implements message.Publisher: for the owner, it waits for the
// publishes in progress and disconnects; for a publisher made by
// WithOptions it does nothing.
func (p *Publisher) Close() error {
	if !p.owner {
		return nil
	}
	c := p.conn
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	defer c.release()
	// Publishes in flight end with their PUBACK or their timeout; past
	// close_timeout the socket is closed and they fail at once.
	ctx, done := c.cfg.closeContext(&c.sock)
	defer done()
	c.wg.Wait()
	if err := c.cm.Disconnect(ctx); err != nil {
		return fmt.Errorf("mqtt: publisher disconnect (close_timeout %s; the socket was closed): %w", c.cfg.CloseTimeout, err)
	}
	return nil
}

// validUTF8 returns s with each run of invalid UTF-8 replaced by U+FFFD.
// MQTT v5 strings must be well-formed UTF-8: a broker closes the connection
// of a client that sends anything else, which would fail every publish in
// flight on it (and a poisoned message that carries such metadata could
// never be published at all).
// strings.ToValidUTF8 returns valid input as it is, without copying.
func validUTF8(s string) string {
	return strings.ToValidUTF8(s, string(utf8.RuneError))
}
