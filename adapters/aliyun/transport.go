package aliyun

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/adapters/transport/queuedconn"
	"github.com/hexmill/hexmill/ports"
)

// ErrClosed is returned by a closed Transport or Subscriber.
var ErrClosed = errors.New("aliyun: closed")

// ErrAuth marks a connection attempt the broker refused at authentication:
// a wrong access key, secret, token, consumer group or a clock too far off.
var ErrAuth = errors.New("authentication refused")

// Transport is the set of connections of one Aliyun consumer group: each
// connection has one receiver link, and every message of every link goes to
// the subscription whose topic filter matches it.
//
// Credit is managed explicitly (go-amqp's automatic credit stalls against
// RabbitMQ 3.10): each link keeps at most Config.Credit messages on their
// way or waiting for a handler, and gives credit back as handlers take them
// (or they are released), while some subscription is active; the
// subscription's Concurrency bounds the messages being handled. With no
// active subscription no credit is issued, so intake stops; what the broker
// still sends on credit it had is released at once.
type Transport struct {
	cfg     Config
	logger  watermill.LoggerAdapter
	now     func() time.Time
	limiter *attemptLimiter

	// base bounds dials and receives; Close cancels it.
	base       context.Context
	cancelBase context.CancelFunc
	closing    chan struct{}
	closeOnce  sync.Once
	wg         sync.WaitGroup // connection loops and message goroutines

	startOnce sync.Once
	conns     []*connection

	plainUser, plainPassword string         // WithPlainAuth
	tlsRoots                 *x509.CertPool // nil: the system's (tests trust their own CA)

	mu      sync.Mutex               // guards route changes, loggedT, Open against Close
	routes  atomic.Pointer[[]*route] // copy on write: read per message
	intake  atomic.Bool              // some route is active
	stats   counters
	loggedT map[string]bool // unmatched topics already logged

	// behind is closed by catchUp when a route's queue drops below
	// handAhead, or the routes change: a serve loop that waits because
	// every route is ahead (allAhead) waits for it. nil when none waits.
	behindMu sync.Mutex
	behind   chan struct{}

	// subs are the Handouts of every subscription; Close closes them,
	// which releases what they handed out and is unsettled.
	subs transport.Subscriptions[delivery]
}

type counters struct {
	received, accepted, released, unmatched, reconnects, authFailures, resyncs atomic.Int64
}

// Stats counts what the consumer did since it started.
type Stats struct {
	Received, Accepted, Released, Unmatched, Reconnects, AuthFailures int64
	// Resyncs counts the drains of a link that was idle with credit
	// believed outstanding (see Config.StallTimeout).
	Resyncs int64
}

// Option changes a Transport for uses other than Aliyun itself.
type Option func(*Transport)

// WithPlainAuth authenticates with a fixed user name and password instead
// of Aliyun's signature: for a local AMQP 1.0 broker (RabbitMQ with
// internal users) in benchmarks and development.
func WithPlainAuth(user, password string) Option {
	return func(c *Transport) { c.plainUser, c.plainPassword = user, password }
}

// New validates cfg and returns a transport; it connects nothing (Open,
// or the first Subscribe, does).
func New(cfg Config, logger watermill.LoggerAdapter, opts ...Option) (*Transport, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("aliyun: %w", err)
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	base, cancel := context.WithCancel(context.Background())
	c := &Transport{
		cfg:        cfg,
		logger:     logger.With(watermill.LogFields{"consumer_group": cfg.ConsumerGroupID}),
		now:        time.Now,
		limiter:    newAttemptLimiter(cfg.Reconnect.MaxAttemptsPerMinute, time.Minute),
		base:       base,
		cancelBase: cancel,
		closing:    make(chan struct{}),
		loggedT:    map[string]bool{},
	}
	for i := range cfg.Connections {
		c.conns = append(c.conns, &connection{c: c, index: i, clientID: cfg.clientID(i), up: make(chan struct{}), failed: make(chan struct{}, 1)})
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Open connects every connection and returns once each has its receiver
// link attached, or with the error of a connection that could not: at
// once on an authentication failure, else after ctx or
// Config.StartTimeout. The connections keep retrying in the background
// until Close either way.
func (c *Transport) Open(ctx context.Context) error {
	c.mu.Lock()
	select {
	case <-c.closing:
		c.mu.Unlock()
		return ErrClosed
	default:
	}
	c.startOnce.Do(func() {
		for _, cn := range c.conns {
			c.wg.Add(1)
			go cn.run()
		}
	})
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer cancel()
	for _, cn := range c.conns {
		for done := false; !done; {
			select {
			case <-cn.up:
				done = true
				continue
			default:
			}
			if err := cn.lastError(); errors.Is(err, ErrAuth) {
				return err
			}
			select {
			case <-cn.up:
				done = true
			case <-cn.failed:
				if err := cn.lastError(); errors.Is(err, ErrAuth) {
					return err
				}
			case <-ctx.Done():
				return fmt.Errorf("aliyun: connection %s not up: %w (last error: %v)", cn.clientID, ctx.Err(), cn.lastError())
			case <-c.closing:
				return ErrClosed
			}
		}
	}
	return nil
}

// ErrConsumeOnly is returned by Publisher: Aliyun pushes device messages
// on this interface and takes none.
var ErrConsumeOnly = errors.New("aliyun: the transport consumes only: publish to another transport")

// Publisher returns ErrConsumeOnly.
func (c *Transport) Publisher(map[string]string) (message.Publisher, error) {
	return nil, ErrConsumeOnly
}

// Ready returns nil while every connection is up with its link attached.
func (c *Transport) Ready() error {
	for _, cn := range c.conns {
		cn.mu.Lock()
		l, err := cn.link, cn.err
		cn.mu.Unlock()
		if l == nil {
			if err == nil {
				err = errors.New("not connected yet")
			}
			return fmt.Errorf("aliyun: connection %s (consumer group %s) down: %w", cn.clientID, c.cfg.ConsumerGroupID, err)
		}
	}
	return nil
}

// Stats returns the counters.
func (c *Transport) Stats() Stats {
	return Stats{
		Received: c.stats.received.Load(), Accepted: c.stats.accepted.Load(), Released: c.stats.released.Load(),
		Unmatched: c.stats.unmatched.Load(), Reconnects: c.stats.reconnects.Load(), AuthFailures: c.stats.authFailures.Load(),
		Resyncs: c.stats.resyncs.Load(),
	}
}

// Close stops intake, releases every unsettled message, then closes links,
// sessions and connections, and waits for the consumer's goroutines. It is
// safe to call more than once.
func (c *Transport) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock() // not while Open launches the connections
		close(c.closing)
		c.mu.Unlock()
		c.cancelBase()
	})
	c.subs.Close()
	c.wg.Wait()
	return nil
}

// addRoute registers r and turns intake on.
func (c *Transport) addRoute(r *route) {
	c.mu.Lock()
	routes := append(c.currentRoutes(), r)
	c.routes.Store(&routes)
	c.intake.Store(true)
	c.mu.Unlock()
	for _, cn := range c.conns {
		if l := cn.current(); l != nil {
			l.refill()
		}
	}
}

// removeRoute unregisters r; intake stops with the last route.
func (c *Transport) removeRoute(r *route) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var routes []*route
	for _, x := range c.currentRoutes() {
		if x != r {
			routes = append(routes, x)
		}
	}
	c.routes.Store(&routes)
	c.intake.Store(len(routes) > 0)
	c.catchUp()
}

func (c *Transport) currentRoutes() []*route {
	if p := c.routes.Load(); p != nil {
		return slices.Clone(*p)
	}
	return nil
}

func (c *Transport) intakeOn() bool { return c.intake.Load() }

// handAhead is how many messages a link's serve loop queues for a route
// beyond the one its pump is handing out, before it leaves the next ones
// in go-amqp's buffer (see allAhead).
const handAhead = 2

// allAhead reports whether every route has at least handAhead messages
// queued. Only then does a serve loop wait instead of receiving: a route
// that is behind, or idle, keeps intake going, so a route whose handler
// holds its messages never holds up another.
func (c *Transport) allAhead() bool {
	p := c.routes.Load()
	if p == nil || len(*p) == 0 {
		return false
	}
	for _, r := range *p {
		if r.queued.Load() < handAhead {
			return false
		}
	}
	return true
}

// waitBehind waits until a route falls behind (catchUp) and reports true;
// false, at once, when none is ahead any more, or when l's connection (for
// Receive to report why) or ctx ends first. The channel is taken before
// allAhead is looked at again, so that a catchUp in between is not missed;
// only a serve loop that found every route ahead takes it, which keeps the
// lock off the path of a link whose routes keep up.
func (c *Transport) waitBehind(ctx context.Context, l *link) bool {
	c.behindMu.Lock()
	if c.behind == nil {
		c.behind = make(chan struct{})
	}
	behind := c.behind
	c.behindMu.Unlock()
	if !c.allAhead() {
		return false
	}
	select {
	case <-behind:
		return true
	case <-l.conn.Done():
	case <-ctx.Done():
	}
	return false
}

// catchUp wakes the serve loops waiting for a route to fall behind.
func (c *Transport) catchUp() {
	c.behindMu.Lock()
	if c.behind != nil {
		close(c.behind)
		c.behind = nil
	}
	c.behindMu.Unlock()
}

// match returns the first active route whose filter matches topic,
// preferring the most specific one: an exact filter before wildcards,
// wildcards before the catch-all "".
func (c *Transport) match(topic string) *route {
	p := c.routes.Load()
	if p == nil {
		return nil
	}
	var best *route
	for _, r := range *p {
		if (best == nil || r.specificity > best.specificity) && transport.MatchTopic(r.filter, topic) {
			best = r
		}
	}
	return best
}

func specificity(filter string) int {
	switch {
	case filter == "" || filter == "#":
		return 0
	case strings.ContainsAny(filter, "+#"):
		return 1
	default:
		return 2
	}
}

// connection is one AMQP connection with its receiver link, redialled
// until the consumer closes.
type connection struct {
	c        *Transport
	index    int
	clientID string

	upOnce sync.Once
	up     chan struct{} // closed once the first link is attached
	failed chan struct{} // signalled after each failed attempt

	mu   sync.Mutex
	link *link // nil while down
	err  error // of the last attempt or link
}

func (cn *connection) current() *link {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.link
}

func (cn *connection) lastError() error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.err
}

func (cn *connection) setState(l *link, err error) {
	cn.mu.Lock()
	cn.link, cn.err = l, err
	cn.mu.Unlock()
}

// run dials, serves and redials the connection until the consumer closes.
func (cn *connection) run() {
	c := cn.c
	defer c.wg.Done()
	bo := newBackoff(c.cfg.Reconnect.InitialInterval, c.cfg.Reconnect.MaxInterval, nil)
	for attempt := 0; ; attempt++ {
		if attempt > 0 && !cn.wait(bo.next()) {
			return
		}
		for wait := c.limiter.reserve(c.now()); wait > 0; wait = c.limiter.reserve(c.now()) {
			c.logger.Info("aliyun: connection attempts at the per-minute limit, waiting", watermill.LogFields{"client_id": cn.clientID, "wait": wait})
			if !cn.wait(wait) {
				return
			}
		}
		l, err := cn.dial()
		if err != nil {
			cn.setState(nil, err)
			if errors.Is(err, ErrAuth) {
				c.stats.authFailures.Add(1)
			}
			c.logger.Error("aliyun: connect", err, watermill.LogFields{"client_id": cn.clientID})
			select {
			case cn.failed <- struct{}{}:
			default:
			}
			select {
			case <-c.closing:
				return
			default:
			}
			continue
		}
		bo.reset()
		cn.setState(l, nil)
		cn.upOnce.Do(func() { close(cn.up) })
		c.logger.Info("aliyun: connected", watermill.LogFields{"client_id": cn.clientID, "user": l.logName})
		l.refill()
		err = l.serve()
		cn.setState(nil, err)
		l.shutdown()
		select {
		case <-c.closing:
			return
		default:
		}
		c.stats.reconnects.Add(1)
		c.logger.Error("aliyun: connection lost, reconnecting", err, watermill.LogFields{"client_id": cn.clientID})
	}
}

// wait sleeps for d; false when the consumer closes first.
func (cn *connection) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-cn.c.closing:
		return false
	}
}

// dial opens a connection, a session and the receiver link, signed afresh.
func (cn *connection) dial() (*link, error) {
	c := cn.c
	ctx, cancel := context.WithTimeout(c.base, c.cfg.ConnectTimeout)
	defer cancel()
	cred := sign(c.cfg, cn.clientID, c.now())
	if c.plainUser != "" {
		cred = credentials{UserName: c.plainUser, Password: c.plainPassword, LogName: c.plainUser}
	}
	opts := &amqp.ConnOptions{
		ContainerID: cn.clientID,
		HostName:    c.cfg.Endpoint(),
		IdleTimeout: c.cfg.IdleTimeout,
		SASLType:    amqp.SASLTypePlain(cred.UserName, cred.Password),
	}
	who := fmt.Sprintf("client %s, consumer group %s, user %s", cn.clientID, c.cfg.ConsumerGroupID, cred.LogName)
	fail := func(stage string, err error) error {
		err = redact(err, cred)
		if isAuthError(err) {
			return fmt.Errorf("aliyun: %s: %w (%s): check access_key_id, access_key_secret, security_token, consumer_group_id, iot_instance_id and the clock: %v", stage, ErrAuth, who, err)
		}
		return fmt.Errorf("aliyun: %s (%s): %w", stage, who, err)
	}
	conn, err := c.connect(ctx, opts)
	if err != nil {
		return nil, fail("dial "+c.cfg.address(), err)
	}
	session, err := conn.NewSession(ctx, nil)
	if err != nil {
		_ = conn.Close()
		return nil, fail("begin session", err)
	}
	receiver, err := session.NewReceiver(ctx, c.cfg.SourceAddress, &amqp.ReceiverOptions{
		Credit:         -1, // explicit credit: see Transport
		SettlementMode: amqp.ReceiverSettleModeFirst.Ptr(),
		MaxMessageSize: c.cfg.maxLinkMessageSize(),
	})
	if err != nil {
		_ = conn.Close()
		return nil, fail("attach receiver "+c.cfg.SourceAddress, err)
	}
	return &link{cn: cn, conn: conn, session: session, receiver: receiver, logName: cred.LogName, cred: cred,
		credit: c.cfg.Credit, batch: max(1, c.cfg.Credit/4), dead: make(chan struct{}), idle: make(chan struct{}, 1)}, nil
}

// connect opens the socket (TLS unless turned off) and the AMQP
// connection on it, within ctx. go-amqp writes each frame (a disposition
// per message) with a system call of its own; the socket queues them, so
// that the frames of a busy link leave together (docs/aliyun.md,
// Writes).
func (c *Transport) connect(ctx context.Context, opts *amqp.ConnOptions) (*amqp.Conn, error) {
	var d net.Dialer
	tcp, err := d.DialContext(ctx, "tcp", net.JoinHostPort(c.cfg.Endpoint(), strconv.Itoa(c.cfg.Port)))
	if err != nil {
		return nil, err
	}
	var sock net.Conn = queuedconn.New(tcp)
	if c.cfg.tls() {
		tc := tls.Client(sock, &tls.Config{ServerName: c.cfg.Endpoint(), RootCAs: c.tlsRoots, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = sock.Close()
			return nil, err
		}
		sock = tc
	}
	conn, err := amqp.NewConn(ctx, sock, opts)
	if err != nil {
		_ = sock.Close()
		return nil, err
	}
	return conn, nil
}

const linkCloseTimeout = 500 * time.Millisecond

// maxTopUps bounds the credit a silent link is given before it is
// drained: at most (1 + maxTopUps) × Config.Credit outstanding.
const maxTopUps = 2

// redactedError is a broker error whose text had the user name (which
// may hold an STS token) or the password in it: brokers echo them.
type redactedError struct {
	text string
	err  error
}

func (e *redactedError) Error() string { return e.text }
func (e *redactedError) Unwrap() error { return e.err }

func redact(err error, cred credentials) error {
	text := err.Error()
	clean := text
	if cred.UserName != "" {
		clean = strings.ReplaceAll(clean, cred.UserName, cred.LogName)
	}
	if cred.Password != "" {
		clean = strings.ReplaceAll(clean, cred.Password, "[redacted]")
	}
	if clean == text {
		return err
	}
	return &redactedError{text: clean, err: err}
}

// isAuthError reports a SASL refusal. go-amqp reports it as a ConnError
// whose text names SASL; RabbitMQ may also just close the socket.
func isAuthError(err error) bool {
	s := strings.ToLower(err.Error())
	for _, sign := range []string{"sasl", "auth_failure", "unauthorized", "authentication", "access_refused", "access-refused"} {
		if strings.Contains(s, sign) {
			return true
		}
	}
	return false
}

// link is one attached receiver link and its credit accounting.
type link struct {
	cn       *connection
	conn     *amqp.Conn
	session  *amqp.Session
	receiver *amqp.Receiver
	logName  string
	cred     credentials // to redact the broker's errors

	credit, batch int

	mu          sync.Mutex
	outstanding int // credit issued minus messages received (negative when the broker overshot)
	waiting     int // received, not yet taken by a handler nor released (holds credit)
	pending     int // received, disposition not yet sent
	overshot    bool
	draining    bool          // a resync drain is under way: no credit meanwhile
	toppedUp    int           // resync top-ups since refill last issued credit
	dead        chan struct{} // closed when serve returns
	idle        chan struct{} // signalled when pending drops to 0
}

// refill issues credit so that waiting + outstanding reaches credit,
// while intake is on. Credit goes out in batches (a quarter of the credit)
// to keep flow frames few, or at once when the broker has none left.
func (l *link) refill() {
	on := l.cn.c.intakeOn()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refillLocked(on)
}

// refillLocked is refill with l.mu held; on is whether intake is on.
func (l *link) refillLocked(on bool) {
	if !on || l.draining {
		return
	}
	// go-amqp sends outstanding + want as the new link credit, in uint32.
	// When the broker overshot (outstanding < 0) that sum can be zero or
	// negative: at zero go-amqp sends no flow at all and forgets the grant,
	// so the two counts part for good (the link later stalls); below zero
	// it wraps to some four billion credits. Nothing is issued until the
	// sum is positive.
	target := l.credit - l.waiting
	want := target - l.outstanding
	if target <= 0 || want <= 0 || (want < l.batch && l.outstanding > 0) {
		return
	}
	if err := l.receiver.IssueCredit(uint32(want)); err != nil {
		return // the link is going down; serve reports why
	}
	l.outstanding += want
	// Credit flows again as handlers take messages: the top-ups, if
	// any, were used up.
	l.toppedUp = 0
}

// serve receives until the link fails or the consumer closes.
func (l *link) serve() error {
	c := l.cn.c
	defer close(l.dead)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := context.AfterFunc(c.base, cancel)
	defer stop()
	stall := newStallTimer(ctx, c.cfg.StallTimeout)
	defer stall.stop()
	for {
		// What go-amqp has buffered is taken without a timer; only a wait
		// for the next message is bounded by the stall timeout.
		m, err := l.receiver.Prefetched(), error(nil)
		if m == nil {
			// Every route has messages queued: what the broker sends stays
			// in go-amqp's buffer until a route falls behind, and is then
			// taken in one go. Parking in Receive for each arrival instead
			// costs a wake-up per message and reads no sooner.
			if c.allAhead() {
				if c.waitBehind(ctx, l) {
					continue
				}
				if ctx.Err() != nil {
					return ErrClosed
				}
			}
			m, err = l.receiver.Receive(stall.arm(), nil)
			stall.disarm()
			if err != nil && ctx.Err() == nil && stall.fired() {
				err = context.DeadlineExceeded
			}
		}
		switch {
		case err == nil:
			l.mu.Lock()
			l.outstanding--
			l.track()
			if l.outstanding < 0 && !l.overshot {
				l.overshot = true
				c.logger.Debug("aliyun: broker sent past the link credit", watermill.LogFields{"client_id": l.cn.clientID})
			}
			l.mu.Unlock()
			l.dispatch(m)
		case ctx.Err() != nil:
			return ErrClosed
		case errors.Is(err, context.DeadlineExceeded):
			if err := l.resync(ctx); err != nil {
				return err
			}
		default:
			return redact(err, l.cred)
		}
	}
}

// stallTimer bounds each wait of serve for a message by the stall
// timeout. A context with a timeout per wait would cost a context, a timer
// and a registration with the parent for nearly every message of a busy
// link (the loop waits again as soon as it handed one out); this one
// re-arms one timer, and makes a new context only after one expired.
type stallTimer struct {
	parent context.Context
	d      time.Duration
	timer  *time.Timer

	mu       sync.Mutex
	ctx      context.Context
	cancel   context.CancelFunc
	deadline time.Time // of the current wait
	expired  bool      // ctx was cancelled by the timer
}

func newStallTimer(parent context.Context, d time.Duration) *stallTimer {
	s := &stallTimer{parent: parent, d: d}
	s.ctx, s.cancel = context.WithCancel(parent)
	s.timer = time.AfterFunc(time.Hour, s.expire)
	s.timer.Stop()
	return s
}

// arm starts a wait of at most the stall timeout and returns its context.
func (s *stallTimer) arm() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expired {
		s.cancel()
		s.ctx, s.cancel = context.WithCancel(s.parent)
		s.expired = false
	}
	s.deadline = time.Now().Add(s.d)
	s.timer.Reset(s.d)
	return s.ctx
}

// disarm ends the wait.
func (s *stallTimer) disarm() { s.timer.Stop() }

// fired reports whether the last wait ended because the timer expired.
func (s *stallTimer) fired() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expired
}

// expire cancels the wait in progress, unless it is a later wait than the
// one the timer was set for (a callback that had begun when disarm
// stopped the timer): that one has a deadline still ahead.
func (s *stallTimer) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expired || time.Now().Before(s.deadline) {
		return
	}
	s.expired = true
	s.cancel()
}

func (s *stallTimer) stop() {
	s.timer.Stop()
	s.mu.Lock()
	s.cancel()
	s.mu.Unlock()
}

// track counts a received message as holding credit and awaiting its
// disposition. l.mu must be held.
func (l *link) track() {
	l.waiting++
	l.pending++
	l.cn.c.stats.received.Add(1)
}

// dispatch queues m for the subscription its topic matches; deliver, on
// a goroutine of its own, takes what no subscription can queue at once.
func (l *link) dispatch(m *amqp.Message) {
	c := l.cn.c
	p := pending{l: l, am: m, wm: toWatermill(m)}
	if c.intakeOn() {
		if r := c.match(p.wm.Metadata.Get(ports.MetadataTopic)); r != nil && r.enqueue(p) {
			return
		}
	}
	c.wg.Add(1)
	go c.deliver(p)
}

// resync runs when nothing arrived for StallTimeout although credit is
// believed outstanding: either the source is empty, or the broker and
// go-amqp disagree about the credit. RabbitMQ 3.10 sends past the credit,
// go-amqp computes each grant relative to its own count, which then went
// negative, and the grant can land below what the broker already sent:
// the link would wait forever. The first silences (maxTopUps) top the
// credit up by a full Config.Credit each, which lifts such a deficit; the
// next silence drains the link, after which broker and go-amqp agree on
// zero and the accounting starts afresh (so an idle link does not
// accumulate credit). A drain unanswered within max(StallTimeout, 5 s)
// reconnects.
//
// Top-ups count until refill issues credit again, not until the next
// message: a link whose broker believes in less credit than go-amqp does
// gets exactly each top-up and no more (refill sees the phantom credit
// as outstanding and issues none), and the top-ups alone would move it at
// Config.Credit messages per StallTimeout for good; a trickle of messages
// would likewise keep an idle link's credit growing.
func (l *link) resync(ctx context.Context) error {
	c := l.cn.c
	if !c.intakeOn() {
		return nil
	}
	l.mu.Lock()
	if l.outstanding <= 0 || l.draining {
		l.mu.Unlock()
		return nil
	}
	if l.toppedUp < maxTopUps {
		l.toppedUp++
		if err := l.receiver.IssueCredit(uint32(l.credit)); err == nil {
			l.outstanding += l.credit
		}
		l.mu.Unlock()
		c.stats.resyncs.Add(1)
		return nil
	}
	l.draining = true
	l.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, max(c.cfg.StallTimeout, 5*time.Second))
	err := l.receiver.DrainCredit(dctx, nil)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ErrClosed
		}
		return fmt.Errorf("aliyun: link silent with credit outstanding and the drain went unanswered: %w", redact(err, l.cred))
	}
	// Messages that came before the drain's answer are not counted
	// against the credit to come.
	var early []*amqp.Message
	l.mu.Lock()
	for m := l.receiver.Prefetched(); m != nil; m = l.receiver.Prefetched() {
		l.track()
		early = append(early, m)
	}
	l.outstanding = 0
	l.draining = false
	l.toppedUp = 0
	l.mu.Unlock()
	c.stats.resyncs.Add(1)
	for _, m := range early {
		l.dispatch(m)
	}
	l.refill()
	return nil
}

// taken gives back the credit of a message a handler took (or that is
// being released): link credit does not depend on settlement in AMQP 1.0,
// and the broker's next messages are on their way while this one is
// handled.
func (l *link) taken() {
	on := l.cn.c.intakeOn()
	l.mu.Lock()
	l.waiting--
	l.refillLocked(on)
	l.mu.Unlock()
}

// release gives back the credit of a message no handler took and releases
// it to the broker.
func (l *link) release(m *amqp.Message) {
	l.taken()
	l.settle(m, false)
}

// settle sends the disposition of a message whose credit was given back.
func (l *link) settle(m *amqp.Message, accept bool) {
	c := l.cn.c
	// No deadline of its own: go-amqp returns once the frame is written or
	// the link ends, and shutdown ends the link after SettleTimeout.
	ctx := context.Background()
	var err error
	if accept {
		err = l.receiver.AcceptMessage(ctx, m)
	} else {
		err = l.receiver.ReleaseMessage(ctx, m)
	}
	if err != nil {
		// The link is gone: the broker redelivers what it did not settle.
		c.logger.Debug("aliyun: settle on a lost link; the broker will redeliver", watermill.LogFields{"client_id": l.cn.clientID, "error": err.Error()})
	} else if accept {
		c.stats.accepted.Add(1)
	} else {
		c.stats.released.Add(1)
	}
	l.mu.Lock()
	l.pending--
	idle := l.pending == 0
	l.mu.Unlock()
	if idle {
		select {
		case l.idle <- struct{}{}:
		default:
		}
	}
}

// shutdown closes the link, the session and the connection. When the
// consumer is closing it first waits (at most SettleTimeout) until every
// message of the link is settled, so that releases reach the broker; a
// link that failed cannot settle anything, so it is closed at once.
func (l *link) shutdown() {
	c := l.cn.c
	select {
	case <-c.closing:
		timeout := time.NewTimer(c.cfg.SettleTimeout)
		defer timeout.Stop()
	wait:
		for {
			l.mu.Lock()
			n := l.pending
			l.mu.Unlock()
			if n <= 0 {
				break
			}
			select {
			case <-l.idle:
			case <-timeout.C:
				break wait
			}
		}
	default:
	}
	// RabbitMQ 3.10 never answers a detach: the graceful close is bounded
	// tightly, closing the connection ends whatever is left.
	ctx, cancel := context.WithTimeout(context.Background(), linkCloseTimeout)
	defer cancel()
	_ = l.receiver.Close(ctx)
	_ = l.session.Close(ctx)
	_ = l.conn.Close()
}

// closed reports whether the link stopped serving.
func (l *link) closed() bool {
	select {
	case <-l.dead:
		return true
	default:
		return false
	}
}

// The contract with the runtime (adapters/transport).
var (
	_ transport.Transport      = (*Transport)(nil)
	_ transport.Defaulter      = (*Config)(nil)
	_ transport.Validator      = Config{}
	_ transport.OptionsChecker = Config{}
)
