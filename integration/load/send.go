package load

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Transport is how the generator reaches the service.
type Transport string

// Transports.
const (
	// MQTT publishes MQTT v5 QoS 1 and counts a message sent on its PUBACK.
	MQTT Transport = "mqtt"
	// AMQP1 sends AMQP 1.0 messages in Aliyun's server-side subscription
	// push format (to RabbitMQ's AMQP 1.0 plugin standing in for Aliyun),
	// counted sent when the broker accepts them.
	AMQP1 Transport = "amqp1"
	// RabbitMQ publishes AMQP 0-9-1 with publisher confirms (pipelined),
	// mandatory, counted sent on the broker's ack.
	RabbitMQ Transport = "rabbitmq"
)

// SendConfig configures Send. Zero values take the defaults in the
// comments.
type SendConfig struct {
	Transport Transport
	// URL of the broker: mqtt://host:1883 (tls://, ws://, wss:// too; user
	// and password may be in the URL) for MQTT; amqp://user:pass@host:5672/
	// (amqps:// for TLS) for AMQP1 and RabbitMQ.
	URL string
	// RunID names the run (default: NewRunID()). The checker filters on it.
	RunID string
	// Count is the number of messages, numbered 0..Count-1.
	Count int
	// Rate in messages per second over all publishers; 0 sends as fast as
	// the broker confirms.
	Rate float64
	// Publishers is the number of concurrent publishers, one connection
	// each (default 4).
	Publishers int
	// Window is how many messages a publisher keeps in flight awaiting
	// their confirmation (default 64; MQTT is further bounded by the
	// broker's Receive Maximum).
	Window int
	// Devices is the number of devices the messages are spread over,
	// message n from device n % Devices (default 4).
	Devices int
	// GiveUp is how long a publisher keeps reconnecting and retrying
	// without a single confirmation before Send fails (default 1 min).
	GiveUp time.Duration

	// Topic is the MQTT topic pattern; {device_id} is replaced by the
	// device ID (default "devices/{device_id}/telemetry").
	Topic string
	// ClientIDPrefix prefixes the MQTT client IDs, which are
	// "{prefix}-{runID}-{i}" (default "hexmill-load").
	ClientIDPrefix string
	// Username and Password authenticate over MQTT when set (else those in
	// the URL, if any).
	Username, Password string

	// Address is the AMQP 1.0 target address, e.g. /amq/queue/{name} (an
	// existing queue) or /queue/{name} on RabbitMQ's AMQP 1.0 plugin.
	Address string

	// Exchange and RoutingKey for RabbitMQ; {device_id} in the routing key
	// is replaced by the device ID. The default exchange "" routes to the
	// queue named by the routing key. A message no queue takes is an error.
	Exchange, RoutingKey string
}

func (c *SendConfig) setDefaults() {
	if c.RunID == "" {
		c.RunID = NewRunID()
	}
	if c.Publishers <= 0 {
		c.Publishers = 4
	}
	if c.Window <= 0 {
		c.Window = 64
	}
	if c.Devices <= 0 {
		c.Devices = 4
	}
	if c.GiveUp <= 0 {
		c.GiveUp = time.Minute
	}
	if c.Topic == "" {
		c.Topic = "devices/{device_id}/telemetry"
	}
	if c.ClientIDPrefix == "" {
		c.ClientIDPrefix = "hexmill-load"
	}
}

func (c *SendConfig) validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("URL is empty"))
	}
	if c.Count <= 0 || c.Count > maxSeq {
		errs = append(errs, fmt.Errorf("count %d is not in 1..%d", c.Count, maxSeq))
	}
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("rate %v is negative", c.Rate))
	}
	switch c.Transport {
	case MQTT:
	case AMQP1:
		if c.Address == "" {
			errs = append(errs, errors.New("amqp1: the target address is empty (e.g. /amq/queue/telemetry)"))
		}
	case RabbitMQ:
		if c.RoutingKey == "" && c.Exchange == "" {
			errs = append(errs, errors.New("rabbitmq: set the exchange, the routing key or both"))
		}
	default:
		errs = append(errs, fmt.Errorf("transport %q is none of mqtt, amqp1, rabbitmq", c.Transport))
	}
	return errors.Join(errs...)
}

// SendResult is what Send did: which messages the broker confirmed.
type SendResult struct {
	RunID     string
	Transport Transport
	// Count is the number of messages asked for.
	Count int
	// Confirmed messages were confirmed by the broker (PUBACK, accepted,
	// ack): the service must deliver each of them.
	Confirmed int
	// Unconfirmed messages were published but not confirmed when Send
	// stopped (cancelled or failed): they may or may not arrive.
	Unconfirmed int
	// Republished counts publications repeated after a connection failed
	// with the message in flight, or after the broker dropped it for want
	// of a subscriber; each may arrive twice.
	Republished int
	// NoSubscribers counts MQTT PUBACKs with reason code 0x10 (no matching
	// subscribers): the broker dropped the message, and the generator
	// published it again after a backoff. Mosquitto 2.0 answers so after a
	// restart until the service subscribes again (docs/mqtt.md).
	NoSubscribers int
	Started       time.Time
	// Elapsed is from the first publication to the last confirmation.
	Elapsed time.Duration

	confirmed []bool // by sequence number; nil: all of 0..Count-1
}

// Rate is the confirmed messages per second.
func (r SendResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Confirmed) / r.Elapsed.Seconds()
}

// IsConfirmed reports whether message seq was confirmed.
func (r SendResult) IsConfirmed(seq int) bool {
	if seq < 0 || seq >= r.Count {
		return false
	}
	return r.confirmed == nil || r.confirmed[seq]
}

// Expect is the SendResult of a run whose messages 0..count-1 were all
// confirmed: for a checker run apart from the generator.
func Expect(runID string, count int) SendResult {
	return SendResult{RunID: runID, Count: count, Confirmed: count}
}

// Send publishes cfg.Count numbered telemetry messages and returns when all
// are confirmed, ctx is done or a publisher gives up. A publisher whose
// connection fails reconnects and publishes again what was in flight. The
// result is valid in every case; the error says why Send stopped early
// (ctx.Err() when cancelled).
func Send(ctx context.Context, cfg SendConfig) (SendResult, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return SendResult{RunID: cfg.RunID, Transport: cfg.Transport, Count: cfg.Count}, fmt.Errorf("load: send: %w", err)
	}
	var dial dialFunc
	switch cfg.Transport {
	case MQTT:
		dial = mqttDialer(&cfg)
	case AMQP1:
		dial = amqp1Dialer(&cfg)
	case RabbitMQ:
		dial = rabbitDialer(&cfg)
	}
	s := &sender{
		cfg:       &cfg,
		dial:      dial,
		jobs:      make(chan *message),
		attempted: make([]bool, cfg.Count),
		confirmed: make([]bool, cfg.Count),
	}
	return s.run(ctx)
}

// link is one publisher's connection.
type link interface {
	// send starts publishing m and returns a function that waits for its
	// confirmation.
	send(ctx context.Context, m *message) (confirm, error)
	// close closes the connection; confirmations not yet received then
	// fail promptly.
	close()
}

type confirm func(ctx context.Context) error

type dialFunc func(ctx context.Context, publisher int) (link, error)

// errNoSubscribers is a publication the broker confirmed and dropped, as no
// subscription matched it (MQTT reason code 0x10). The generator knows a
// service should be subscribed, so it publishes the message again after a
// backoff, on the same connection, until GiveUp passes without progress.
var errNoSubscribers = errors.New("the broker dropped the message: no matching subscribers (reason code 0x10); is the service subscribed?")

// fatalError is a failure a retry cannot fix (a message no queue takes, a
// publication the broker refuses): Send stops.
type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }

type sender struct {
	cfg  *SendConfig
	dial dialFunc
	jobs chan *message

	// Indexed by sequence number: each index is written by the one
	// publisher that owns the message, read after all have stopped.
	attempted, confirmed []bool

	confirmedN    atomic.Int64
	republished   atomic.Int64
	noSubscribers atomic.Int64
	lastConfirm   atomic.Int64 // unix nanos
}

func (s *sender) run(ctx context.Context) (SendResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// Connect every publisher before the first message: a wrong URL or
	// credentials fail at once.
	links := make([]link, s.cfg.Publishers)
	for i := range links {
		l, err := s.dial(ctx, i)
		if err != nil {
			for _, l := range links[:i] {
				l.close()
			}
			return s.result(time.Now()), fmt.Errorf("load: send: publisher %d: %w", i, err)
		}
		links[i] = l
	}

	started := time.Now()
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(s.jobs)
		s.feed(ctx, started)
	}()
	for i, l := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.publish(ctx, i, l); err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("load: send: publisher %d: %w", i, err)
				}
				errMu.Unlock()
				cancel(err)
			}
		}()
	}
	wg.Wait()
	res := s.result(started)
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("load: send: %w", context.Cause(ctx))
	}
	return res, nil
}

func (s *sender) result(started time.Time) SendResult {
	r := SendResult{
		RunID:         s.cfg.RunID,
		Transport:     s.cfg.Transport,
		Count:         s.cfg.Count,
		Confirmed:     int(s.confirmedN.Load()),
		Republished:   int(s.republished.Load()),
		NoSubscribers: int(s.noSubscribers.Load()),
		Started:       started,
		confirmed:     s.confirmed,
	}
	for n, a := range s.attempted {
		if a && !s.confirmed[n] {
			r.Unconfirmed++
		}
	}
	if last := s.lastConfirm.Load(); last > 0 {
		r.Elapsed = time.Unix(0, last).Sub(started)
	}
	return r
}

// feed hands out the messages, paced at cfg.Rate when set.
func (s *sender) feed(ctx context.Context, started time.Time) {
	var timer *time.Timer
	for n := range s.cfg.Count {
		if s.cfg.Rate > 0 {
			due := started.Add(time.Duration(float64(n) / s.cfg.Rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				if timer == nil {
					timer = time.NewTimer(d)
					defer timer.Stop()
				} else {
					timer.Reset(d)
				}
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case s.jobs <- &message{seq: n, device: n % s.cfg.Devices}:
		}
	}
}

type inflight struct {
	m *message
	c confirm
}

// publish is one publisher: it keeps up to cfg.Window messages in flight,
// and on a failure reconnects and publishes again what was not confirmed.
func (s *sender) publish(ctx context.Context, i int, l link) (err error) {
	defer func() {
		if l != nil {
			l.close()
		}
	}()
	var (
		window       []inflight
		retry        []*message
		jobsOpen     = true
		lastProgress = time.Now()
		backoff      time.Duration
	)
	// settle waits for the oldest message in flight.
	settle := func(wctx context.Context) error {
		f := window[0]
		if err := f.c(wctx); err != nil {
			// Only a wait cut short leaves the message in flight: any
			// other error settled it (an unroutable message's return is
			// taken once; settled again, it would count as confirmed).
			if wctx.Err() != nil && errors.Is(err, wctx.Err()) {
				return err // still in flight: drain settles it
			}
			window = window[1:]
			retry = append(retry, f.m)
			if errors.Is(err, errNoSubscribers) {
				s.noSubscribers.Add(1)
			}
			return err
		}
		window = window[1:]
		s.confirmed[f.m.seq] = true
		s.confirmedN.Add(1)
		s.lastConfirm.Store(time.Now().UnixNano())
		lastProgress = time.Now()
		backoff = 0
		return nil
	}
	// drain settles what is in flight after the connection is gone or ctx
	// is done: confirmations already received still count.
	drain := func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for len(window) > 0 {
			if settle(dctx) != nil && dctx.Err() != nil {
				for _, f := range window { // given up: unconfirmed
					retry = append(retry, f.m)
				}
				window = nil
			}
		}
	}

	for {
		if ctx.Err() != nil {
			drain()
			return nil
		}
		var (
			m       *message
			failure error
		)
		switch {
		case len(retry) > 0:
			m, retry = retry[0], retry[1:]
			s.republished.Add(1)
		case !jobsOpen || len(window) >= s.cfg.Window:
			if len(window) == 0 {
				return nil // no more jobs, nothing in flight
			}
			failure = settle(ctx)
		case len(window) == 0:
			select {
			case m, jobsOpen = <-s.jobs:
			case <-ctx.Done():
			}
		default:
			select {
			case m, jobsOpen = <-s.jobs:
			default:
				failure = settle(ctx)
			}
		}
		if m != nil {
			if m.at.IsZero() {
				m.at = time.Now()
			}
			s.attempted[m.seq] = true
			var c confirm
			if c, failure = l.send(ctx, m); failure == nil {
				window = append(window, inflight{m: m, c: c})
			} else {
				retry = append(retry, m)
			}
		}
		if failure == nil || ctx.Err() != nil {
			continue
		}
		if errors.Is(failure, errNoSubscribers) {
			// The connection is fine: collect the rest of the window
			// (the broker likely dropped those too), wait, publish again.
			drain()
			if time.Since(lastProgress) > s.cfg.GiveUp {
				return fmt.Errorf("no subscriber took a message for %v: %w", s.cfg.GiveUp, failure)
			}
			backoff = min(max(2*backoff, 50*time.Millisecond), time.Second)
			if !wait(ctx, backoff) {
				return nil
			}
			continue
		}
		// The connection failed: close it, keep what was confirmed,
		// publish the rest again on a new one.
		var fatal fatalError
		if errors.As(failure, &fatal) {
			drain()
			return failure
		}
		l.close()
		l = nil
		drain()
		for l == nil {
			if time.Since(lastProgress) > s.cfg.GiveUp {
				return fmt.Errorf("no confirmation for %v: %w", s.cfg.GiveUp, failure)
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 2*time.Second)
			if !wait(ctx, backoff) {
				return nil
			}
			if l, err = s.dial(ctx, i); err != nil {
				failure = err
				l = nil
			}
		}
	}
}

// wait waits d or until ctx is done; it reports whether d passed.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
