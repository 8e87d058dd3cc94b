package mqtt

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

// Subscriber consumes MQTT messages over one connection with a persistent
// session (clean start false, Config.SessionExpiry), so what it has not
// acked when it stops or dies is redelivered by the broker when its client
// ID connects again.
//
// The contract (see transport.Transport):
//   - Subscribe returns once the broker acknowledged the SUBSCRIBE.
//   - Cancelling the Subscribe context stops handing messages out and
//     closes the output channel; the subscription stays in the session
//     (so nothing published meanwhile is lost), messages arriving after
//     that stay unacked, and messages already handed out can still be
//     acked or nacked.
//   - Settling a message (the transport.Settler in its context; Ack and Nack
//     are bridged onto it unless the Subscribe context is
//     transport.SettledByConsumer) acks it with PUBACK, in arrival order
//     (docs/mqtt.md), or, for a nack, hands it to the output again after a
//     bounded exponential backoff (MQTT has no nack).
//   - Close leaves everything unsettled unacked, flushes the acks given
//     before it disconnects, and disconnects: the broker redelivers the
//     rest on the next connection of the same client ID.
//   - Message contexts derive from the subscriber, not from the Subscribe
//     context; they end when the message is settled or at Close.
type Subscriber struct {
	cfg         Config
	sc          SubscriberConfig
	qos         byte
	concurrency int
	logger      watermill.LoggerAdapter
	onClose     func()

	base       context.Context // parent of the connection contexts; Close cancels it
	cancelBase context.CancelFunc
	closing    chan struct{}
	closeOnce  sync.Once
	wg         sync.WaitGroup // manager and nack goroutines
	kick       chan struct{}
	lastErr    lastError
	sock       socket // closed when Close runs out of close_timeout

	// connMu serialises connection set-up: the main connection and
	// SubscribeInitialize's short-lived one share the client ID.
	connMu sync.Mutex

	mu        sync.Mutex
	clientID  string
	releaseID func()
	cm        *autopaho.ConnectionManager
	up        bool
	gen       uint64 // connection generation, counts OnConnectionUp
	// connCtx ends when the current connection drops: paho keeps a
	// SUBSCRIBE's pending SUBACK across a reconnect and never resends the
	// SUBSCRIBE, so a subscribe under way would otherwise wait out
	// PublishTimeout while the new connection has no subscription.
	connCtx    context.Context
	connCancel context.CancelFunc
	routes     []*route
	subs       transport.Subscriptions[delivery] // one Handout per Subscribe
	// acks are the current connection's QoS 1/2 messages in arrival
	// order, not yet acknowledged to the broker; sendAcks sends the
	// handled prefix.
	ackCli *paho.Client
	acks   []*ackEntry

	session *ackSession
}

type route struct {
	filter string // as the user wrote it, for matching topics
	full   string // as subscribed: $share/{group}/{filter}
	qos    byte

	subscribed uint64 // generation of the SUBACK, 0 for none
	err        error  // the broker refused the subscription
	state      chan struct{}

	queue []*inbound // arrived, not handed out
	bytes int        // payload bytes in queue
	// signal holds a token while the queue may have messages for a
	// waiting consumer.
	signal chan struct{}
	// room holds a token when a message left the queue: onPublish waits
	// for it while the queue is full (see waitRoom).
	room chan struct{}
}

type inbound struct {
	pb       *paho.Publish
	cli      *paho.Client // the connection it arrived on
	ack      *ackEntry    // nil for QoS 0
	uuid     string
	attempts int
}

type ackEntry struct {
	id    uint16
	qos   byte
	acked bool // by the handler
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// NewSubscriber returns a subscriber for one binding. It connects on the
// first Subscribe.
func NewSubscriber(cfg Config, sc SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	qos, err := cfg.subscriberSettings(sc)
	if err != nil {
		return nil, fmt.Errorf("mqtt: subscriber %s: %w", sc.Handler, err)
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	concurrency := max(sc.Concurrency, 1)
	if concurrency > cfg.ReceiveMaximum {
		logger.Info("MQTT subscriber concurrency is above receive_maximum: at most receive_maximum messages can be in flight",
			watermill.LogFields{"handler": sc.Handler, "concurrency": concurrency, "receive_maximum": cfg.ReceiveMaximum})
		concurrency = cfg.ReceiveMaximum
	}
	base, cancel := context.WithCancel(context.Background())
	return &Subscriber{
		cfg: cfg, sc: sc, qos: qos, concurrency: concurrency,
		logger:    logger.With(watermill.LogFields{"handler": sc.Handler}),
		releaseID: func() {},
		base:      base, cancelBase: cancel,
		closing: make(chan struct{}), kick: make(chan struct{}, 1),
		session: &ackSession{SessionManager: state.NewInMemory()},
	}, nil
}

// ClientID is the client identifier of the subscriber's connection, once
// it connected ({n} is claimed when the connection starts).
func (s *Subscriber) ClientID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clientID
}

func (s *Subscriber) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// route returns the route of filter, creating it. s.mu must be held.
func (s *Subscriber) route(filter string) *route {
	full := subscriptionFilter(s.sc.Group, filter)
	for _, r := range s.routes {
		if r.full == full {
			return r
		}
	}
	r := &route{filter: filter, full: full, qos: s.qos, state: make(chan struct{}), signal: make(chan struct{}, 1), room: make(chan struct{}, 1)}
	s.routes = append(s.routes, r)
	return r
}

// spawn runs f on a goroutine Close waits for, unless Close has begun.
func (s *Subscriber) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isClosing() {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

func (s *Subscriber) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Subscribe implements message.Subscriber: topic is a topic filter
// (wildcards allowed); with a group the adapter subscribes to
// $share/{group}/{topic}. It returns once the broker acknowledged the
// subscription.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if s.isClosing() {
		return nil, ErrClosed
	}
	if err := checkFilter(topic); err != nil {
		return nil, fmt.Errorf("mqtt: subscribe: %w", err)
	}
	s.mu.Lock()
	r := s.route(topic)
	s.mu.Unlock()
	if err := s.ensureConnected(); err != nil {
		return nil, err
	}
	s.wake()
	if err := s.awaitSubscribed(ctx, r); err != nil {
		return nil, err
	}
	h := transport.NewHandout(ctx, s.concurrency, s.settle)
	if !s.subs.Add(h) || !h.Go(func() { s.consume(h, r) }) {
		return nil, ErrClosed
	}
	return h.Output(), nil
}

// SubscribeInitialize implements message.SubscribeInitializer: it creates
// the subscription in the persistent session, so that messages published
// before the first Subscribe wait for it. Without a live connection it
// connects just for that and disconnects, leaving the session.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	if s.isClosing() {
		return ErrClosed
	}
	if err := checkFilter(topic); err != nil {
		return fmt.Errorf("mqtt: subscribe: %w", err)
	}
	s.mu.Lock()
	r := s.route(topic)
	s.mu.Unlock()

	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.mu.Lock()
	connected := s.cm != nil
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ConnectTimeout+s.cfg.PublishTimeout)
	defer cancel()
	if connected {
		s.wake()
		return s.awaitSubscribed(ctx, r)
	}
	// A short-lived connection with the client ID and session the main
	// connection will have. It acks nothing (its ackSession is never asked
	// to): whatever the session delivers to it stays unacked and comes
	// back on the next connection.
	id, release := s.cfg.claimClientID(s.sc.Handler)
	defer release()
	cc, err := s.cfg.clientConfig(connOptions{
		clientID: id, persistent: true, lastErr: &s.lastErr,
		receiveMaximum: uint16(s.cfg.ReceiveMaximum),
		maxPacketSize:  s.maxPacketSize(),
		session:        &ackSession{SessionManager: state.NewInMemory()},
	}, s.logger.With(watermill.LogFields{"client_id": id}))
	if err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	cm, err := connect(cc)
	if err != nil {
		return err
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), s.cfg.CloseTimeout)
		defer dcancel()
		_ = cm.Disconnect(dctx)
	}()
	if err := cm.AwaitConnection(ctx); err != nil {
		return s.lastErr.wrap(fmt.Errorf("mqtt: subscribe %s: no connection to the broker: %w", r.full, err))
	}
	if _, err := cm.Subscribe(ctx, s.subscribePacket([]*route{r})); err != nil {
		return fmt.Errorf("mqtt: subscribe %s: %w", r.full, err)
	}
	return nil
}

func (s *Subscriber) subscribePacket(routes []*route) *paho.Subscribe {
	sp := &paho.Subscribe{}
	for _, r := range routes {
		// RetainHandling 1: retained messages only for a new subscription,
		// not again on every reconnect.
		sp.Subscriptions = append(sp.Subscriptions, paho.SubscribeOptions{Topic: r.full, QoS: r.qos, RetainHandling: 1})
	}
	return sp
}

// awaitSubscribed waits until r is subscribed on the current connection.
func (s *Subscriber) awaitSubscribed(ctx context.Context, r *route) error {
	for {
		s.mu.Lock()
		if r.err != nil {
			s.mu.Unlock()
			return r.err
		}
		if s.up && r.subscribed == s.gen {
			s.mu.Unlock()
			return nil
		}
		ch := r.state
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return s.lastErr.wrap(fmt.Errorf("mqtt: subscribe %s: not acknowledged by the broker: %w", r.full, ctx.Err()))
		case <-s.closing:
			return ErrClosed
		}
	}
}

// ensureConnected starts the subscriber's connection and its manager.
func (s *Subscriber) ensureConnected() error {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.mu.Lock()
	connected := s.cm != nil
	s.mu.Unlock()
	if connected {
		return nil
	}
	if s.isClosing() {
		return ErrClosed
	}
	id, release := s.cfg.claimClientID(s.sc.Handler)
	s.mu.Lock()
	s.clientID, s.releaseID = id, release
	s.mu.Unlock()
	s.logger.Info("MQTT subscriber connecting", watermill.LogFields{"client_id": id})
	cc, err := s.cfg.clientConfig(connOptions{
		clientID:       id,
		persistent:     true,
		receiveMaximum: uint16(s.cfg.ReceiveMaximum),
		maxPacketSize:  s.maxPacketSize(),
		onPublish:      s.onPublish,
		onUp:           s.onUp,
		onDown:         s.onDown,
		session:        s.session,
		lastErr:        &s.lastErr,
		socket:         &s.sock,
	}, s.logger.With(watermill.LogFields{"client_id": id}))
	if err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	cm, err := connect(cc)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cm = cm
	s.mu.Unlock()
	if !s.spawn(func() { s.manage(cm) }) {
		return ErrClosed // Close disconnects cm
	}
	return nil
}

func (s *Subscriber) onUp(_ *autopaho.ConnectionManager, ca *paho.Connack) {
	s.mu.Lock()
	s.up = true
	s.gen++
	s.connCtx, s.connCancel = context.WithCancel(s.base)
	s.mu.Unlock()
	s.logger.Debug("MQTT subscriber connected", watermill.LogFields{"session_present": ca.SessionPresent})
	s.wake()
}

// onDown runs once the connection is gone: what arrived on it and was not
// handed out will be redelivered by the broker, so it leaves the queues.
func (s *Subscriber) onDown() bool {
	s.mu.Lock()
	s.up = false
	if s.connCancel != nil {
		s.connCancel()
	}
	for _, r := range s.routes {
		r.queue = dropStale(r.queue)
		r.bytes = queuedBytes(r.queue)
	}
	s.mu.Unlock()
	s.logger.Info("MQTT subscriber connection lost; reconnecting", nil)
	return true
}

func dropStale(q []*inbound) []*inbound {
	kept := q[:0]
	for _, in := range q {
		if !in.stale() {
			kept = append(kept, in)
		}
	}
	clear(q[len(kept):])
	return kept
}

func (in *inbound) stale() bool {
	select {
	case <-in.cli.Done():
		return true
	default:
		return false
	}
}

// manage (re)subscribes every route on every connection, because a
// session may have expired while disconnected.
func (s *Subscriber) manage(cm *autopaho.ConnectionManager) {
	for {
		select {
		case <-s.kick:
		case <-s.closing:
			return
		}
		for {
			s.mu.Lock()
			gen, up, connCtx := s.gen, s.up, s.connCtx
			var pending []*route
			for _, r := range s.routes {
				if r.subscribed != gen && r.err == nil {
					pending = append(pending, r)
				}
			}
			s.mu.Unlock()
			if !up || len(pending) == 0 {
				break
			}
			ctx, cancel := context.WithTimeout(connCtx, s.cfg.PublishTimeout)
			suback, err := cm.Subscribe(ctx, s.subscribePacket(pending))
			cancel()
			if suback == nil || len(suback.Reasons) != len(pending) {
				if s.isClosing() {
					return
				}
				s.logger.Error("MQTT subscribe failed; retrying", err, watermill.LogFields{"filters": len(pending)})
				select {
				case <-time.After(s.cfg.ReconnectMin):
				case <-s.closing:
					return
				}
				continue
			}
			s.mu.Lock()
			if s.gen == gen {
				for i, r := range pending {
					if code := suback.Reasons[i]; code >= 0x80 {
						r.err = fmt.Errorf("mqtt: subscribe %s: broker refused with reason code 0x%02x", r.full, code)
						s.logger.Error("MQTT subscription refused", r.err, nil)
					} else {
						r.subscribed = gen
					}
					close(r.state)
					r.state = make(chan struct{})
				}
			}
			s.mu.Unlock()
		}
	}
}

// onPublish runs on paho's receive goroutine: it only queues.
func (s *Subscriber) onPublish(pr paho.PublishReceived) (bool, error) {
	in := &inbound{pb: pr.Packet, cli: pr.Client}
	s.mu.Lock()
	if in.pb.QoS > 0 {
		if s.ackCli != pr.Client {
			s.ackCli, s.acks = pr.Client, nil
		}
		in.ack = &ackEntry{id: in.pb.PacketID, qos: in.pb.QoS}
		s.acks = append(s.acks, in.ack)
	}
	var target *route
	for _, r := range s.routes {
		if transport.MatchTopic(r.filter, in.pb.Topic) {
			target = r
			break
		}
	}
	full := false
	if target != nil {
		target.queue = append(target.queue, in)
		target.bytes += len(in.pb.Payload)
		target.notify()
		full = s.full(target)
	}
	s.mu.Unlock()
	if full {
		s.waitRoom(target)
	}
	if target == nil {
		// A subscription left in the persistent session by an earlier
		// configuration: nobody here handles it, and holding it unacked
		// would stall every later ack on this connection.
		s.logger.Error("MQTT message matches no subscription of this subscriber; acknowledged and dropped", nil,
			watermill.LogFields{"topic": in.pb.Topic})
		s.ack(in)
	}
	return true, nil
}

// roomWait bounds how long waitRoom holds one message.
const roomWait = time.Second

// waitRoom holds paho's receive goroutine while r's queue holds
// ReceiveMaximum messages or more. A broker that keeps to the Receive
// Maximum never fills it (the handed-out messages count against it too);
// mosquitto 2.0 does not keep to it once acks flow (docs/mqtt.md), and
// without this bound a backlog at the broker would move into this
// process's memory. Waiting here stops paho reading the connection, so the
// backlog stays in the broker (TCP back-pressure); it ends as soon as a
// consumer takes a message, at Close, or after roomWait at most (paho
// ends a lost connection only once this goroutine returns, and it reads
// PINGRESP on the same connection).
func (s *Subscriber) waitRoom(r *route) {
	timeout := time.NewTimer(roomWait)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		full := s.full(r)
		s.mu.Unlock()
		if !full {
			return
		}
		select {
		case <-r.room:
		case <-s.closing:
			return
		case <-timeout.C:
			return
		}
	}
}

// ack acknowledges in to the broker once every message that arrived
// before it on its connection is acknowledged too.
func (s *Subscriber) ack(in *inbound) {
	if in.ack == nil {
		return
	}
	s.mu.Lock()
	in.ack.acked = true
	first := len(s.acks) > 0 && s.acks[0].acked
	s.mu.Unlock()
	if first {
		s.sendAcks()
	}
}

// sendAcks sends the acks of the handled prefix of s.acks, in arrival
// order (MQTT-4.6.0-2), on the connection the messages came on; when that
// connection is gone, the broker redelivers them instead.
func (s *Subscriber) sendAcks() {
	a := s.session
	a.mu.Lock()
	defer a.mu.Unlock()
	s.mu.Lock()
	n := 0
	for n < len(s.acks) && s.acks[n].acked {
		n++
	}
	batch := append(a.batch[:0], s.acks[:n]...)
	clear(s.acks[:n])
	s.acks = s.acks[n:]
	cli := s.ackCli
	s.mu.Unlock()
	defer func() {
		clear(batch)
		a.batch = batch[:0]
	}()
	if len(batch) == 0 || cli == nil {
		return
	}
	select {
	case <-cli.Done():
		return
	default:
	}
	// The client is live, and a.mu keeps the session from taking a new
	// connection (ConAckReceived) until these acks are written.
	for _, e := range batch {
		a.pb.QoS, a.pb.PacketID = e.qos, e.id
		if err := a.SessionManager.Ack(&a.pb); err != nil {
			s.logger.Error("MQTT ack failed; the broker will redeliver", err, nil)
			return
		}
	}
}

// ackSession is the session state of a subscriber's connection. paho's
// own manual acknowledgement keeps unacked messages in a list it scans on
// every arrival and every ack, which costs in proportion to the Receive
// Maximum per message (docs/bench). So the connection runs
// without it, and paho asks the session to ack each PUBLISH as soon as
// OnPublishReceived returned; ackSession ignores that, and the subscriber
// sends its acks through the session itself (sendAcks), once handled.
type ackSession struct {
	session.SessionManager

	// mu is held while acks are written and while the session takes a new
	// connection, so that an old connection's acks never reach a new one
	// (packet IDs are per connection).
	mu    sync.Mutex
	batch []*ackEntry     // sendAcks' buffer
	pb    packets.Publish // sendAcks' argument to the session's Ack
}

// Ack implements session.SessionManager: paho's automatic ack, ignored.
func (a *ackSession) Ack(*packets.Publish) error { return nil }

// ConAckReceived implements session.SessionManager.
func (a *ackSession) ConAckReceived(conn io.Writer, cp *packets.Connect, ca *packets.Connack) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.SessionManager.ConAckReceived(conn, cp, ca)
}

// consume hands the messages of r out until intake stops.
func (s *Subscriber) consume(h *transport.Handout[delivery], r *route) {
	for h.Acquire() {
		in := s.next(h, r)
		if in == nil {
			h.Release()
			return
		}
		if !h.Send(s.message(in), delivery{r: r, in: in}) {
			s.requeue(r, in) // for another consumer of r, or unacked: the broker redelivers it
			return
		}
	}
}

// delivery is what settling a message handed out needs.
type delivery struct {
	r  *route
	in *inbound
}

// settle acks the message of d, or hands it out again after a backoff
// (nack). Once Close has begun a nack leaves the message unacked, for the
// broker to redeliver.
func (s *Subscriber) settle(d delivery, acked bool) {
	if acked {
		s.ack(d.in)
		return
	}
	d.in.attempts++
	backoff := s.cfg.nackBackoff(d.in.attempts)
	s.spawn(func() { // not once Close has begun: then the broker redelivers it
		t := time.NewTimer(backoff)
		defer t.Stop()
		select {
		case <-t.C:
			s.requeue(d.r, d.in)
		case <-s.closing:
		}
	})
}

// next takes the first live message of r, waiting for one; nil when intake
// stops first.
func (s *Subscriber) next(h *transport.Handout[delivery], r *route) *inbound {
	for {
		s.mu.Lock()
		for len(r.queue) > 0 {
			in := r.queue[0]
			r.queue[0] = nil
			r.queue = r.queue[1:]
			r.bytes -= len(in.pb.Payload)
			select {
			case r.room <- struct{}{}:
			default:
			}
			if !in.stale() {
				if len(r.queue) > 0 {
					r.notify() // for the other consumers of r
				}
				s.mu.Unlock()
				return in
			}
		}
		s.mu.Unlock()
		select {
		case <-r.signal:
		case <-h.Stopped():
			return nil
		}
	}
}

// requeue puts in back at the front of r, unless its connection is gone
// (then the broker redelivers it).
func (s *Subscriber) requeue(r *route, in *inbound) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in.stale() {
		return
	}
	r.queue = append([]*inbound{in}, r.queue...)
	r.bytes += len(in.pb.Payload)
	r.notify()
}

func (r *route) notify() {
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// message converts an MQTT PUBLISH into a watermill message. A user
// property named like a framework key (transport.FrameworkKey) is dropped:
// the topic, content type, correlation ID and redelivery come from the
// packet itself.
func (s *Subscriber) message(in *inbound) *message.Message {
	md := message.Metadata{}
	uuid := in.uuid
	if p := in.pb.Properties; p != nil {
		for _, up := range p.User {
			if up.Key == PropertyUUID {
				if uuid == "" {
					uuid = up.Value
				}
				continue
			}
			if transport.FrameworkKey(up.Key) {
				continue
			}
			md[up.Key] = up.Value
		}
		if p.ContentType != "" {
			md[ports.MetadataContentType] = p.ContentType
		}
		if len(p.CorrelationData) > 0 {
			md[ports.MetadataCorrelationID] = string(p.CorrelationData)
		}
	}
	if uuid == "" {
		uuid = watermill.NewUUID() // a publisher that is not watermill
	}
	in.uuid = uuid
	md[ports.MetadataTopic] = in.pb.Topic
	if in.pb.Duplicate() {
		md[ports.MetadataRedelivered] = "true"
	}
	msg := message.NewMessage(uuid, in.pb.Payload)
	msg.Metadata = md
	return msg
}

// Connections counts the connections the subscriber has made (1 until the
// first reconnect).
func (s *Subscriber) Connections() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// Ready reports nil while the subscriber is connected and every
// subscription is acknowledged on the current connection.
func (s *Subscriber) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.isClosing():
		return ErrClosed
	case s.cm == nil || len(s.routes) == 0:
		return fmt.Errorf("mqtt: subscriber %s: not subscribed yet", s.sc.Handler)
	case !s.up:
		return s.lastErr.wrap(fmt.Errorf("mqtt: subscriber %s: not connected to the broker", s.sc.Handler))
	}
	var waiting []string
	for _, r := range s.routes {
		if r.err != nil {
			return r.err
		}
		if r.subscribed != s.gen {
			waiting = append(waiting, r.full)
		}
	}
	if len(waiting) > 0 {
		return fmt.Errorf("mqtt: subscriber %s: subscribing to %s", s.sc.Handler, strings.Join(waiting, ", "))
	}
	return nil
}

// Close stops every subscription, leaves unsettled messages unacked for
// the broker to redeliver, flushes the acks already given and disconnects,
// keeping the session. It is safe to call more than once.
func (s *Subscriber) Close() error {
	var err error
	s.closeOnce.Do(func() {
		// Past close_timeout the socket is closed: writes blocked on it
		// (acks, a SUBSCRIBE, the DISCONNECT) fail at once.
		ctx, done := s.cfg.closeContext(&s.sock)
		defer done()
		s.mu.Lock()
		close(s.closing)
		s.mu.Unlock()
		// Every message is settled: what was acked is acked, the rest
		// stays unacked (a nack spawns nothing once closing). The settles
		// under way have returned.
		s.subs.Close()
		s.cancelBase()
		s.wg.Wait()
		s.connMu.Lock()
		defer s.connMu.Unlock()
		s.mu.Lock()
		cm := s.cm
		s.mu.Unlock()
		if cm != nil {
			// Every ack given is written: the disconnect flushes them.
			if derr := cm.Disconnect(ctx); derr != nil {
				err = fmt.Errorf("mqtt: subscriber %s: disconnect (close_timeout %s; the socket was closed): %w", s.sc.Handler, s.cfg.CloseTimeout, derr)
			}
		}
		s.releaseID()
		if s.onClose != nil {
			s.onClose()
		}
	})
	return err
}
