package load

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// CheckConfig configures the checker. Zero values take the defaults in the
// comments.
type CheckConfig struct {
	// URL of the sink RabbitMQ, amqp://user:pass@host:5672/.
	URL string
	// Queue the checker consumes: declared durable unless it exists. Give
	// the checker a queue of its own: it acks what it reads, its run's
	// alerts and any other.
	Queue string
	// Exchange, when set, is bound to Queue with BindingKey; it is declared
	// durable of ExchangeType (default "topic") unless it exists.
	Exchange, ExchangeType string
	// BindingKey binds Queue to Exchange (default "#").
	BindingKey string
	// RunID selects the alerts of one run (see DeviceID, AliyunDevice).
	RunID string
	// QuietTimeout ends Wait when no alert of the run arrived for that
	// long and some are still missing (default 10 s).
	QuietTimeout time.Duration
	// Prefetch is the number of unacked deliveries (default 256).
	Prefetch int
	// DeleteQueue deletes Queue on Close.
	DeleteQueue bool
}

func (c *CheckConfig) setDefaults() {
	if c.ExchangeType == "" {
		c.ExchangeType = amqp.ExchangeTopic
	}
	if c.BindingKey == "" {
		c.BindingKey = "#"
	}
	if c.QuietTimeout <= 0 {
		c.QuietTimeout = 10 * time.Second
	}
	if c.Prefetch <= 0 {
		c.Prefetch = 256
	}
}

func (c *CheckConfig) validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("URL is empty"))
	}
	if c.Queue == "" {
		errs = append(errs, errors.New("queue is empty"))
	}
	if c.RunID == "" {
		errs = append(errs, errors.New("run ID is empty"))
	}
	return errors.Join(errs...)
}

// Checker consumes the sink queue and records the alerts of one run. It
// consumes from NewChecker until Close, reconnecting when the connection
// drops; Wait and AwaitReceived may be called at any time in between.
type Checker struct {
	cfg  CheckConfig
	ctx  context.Context
	stop context.CancelFunc
	done chan struct{} // closed when the consumer has stopped

	closeOnce sync.Once
	closeErr  error

	mu         sync.Mutex
	seen       []uint32 // deliveries by sequence number
	distinct   int
	deliveries []delivery
	ignored    int
	malformed  int
	last       time.Time // the last delivery of the run
	reconnects int
	consumeErr error // the last connection failure
	changed    chan struct{}
	// Set by Wait: the confirmed messages not received yet.
	expect  *SendResult
	missing int
}

// delivery is one delivery of an alert of the run.
type delivery struct {
	seq     int
	recv    int64 // unix nanos, the checker's clock
	at      int64 // unix nanos, the generator's clock
	replays bool  // a delivery of a seq seen before
}

// NewChecker connects to the sink, declares and binds its queue and starts
// consuming. ctx bounds the setup only; the consumer runs until Close.
func NewChecker(ctx context.Context, cfg CheckConfig) (*Checker, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("load: check: %w", err)
	}
	conn, deliveries, err := subscribe(ctx, &cfg)
	if err != nil {
		return nil, fmt.Errorf("load: check: %w", err)
	}
	cctx, stop := context.WithCancel(context.Background())
	c := &Checker{cfg: cfg, ctx: cctx, stop: stop, done: make(chan struct{}), changed: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.consume(conn, deliveries)
	}()
	return c, nil
}

// subscribe declares the topology and starts a consumer.
func subscribe(ctx context.Context, cfg *CheckConfig) (*amqp.Connection, <-chan amqp.Delivery, error) {
	conn, err := dialRabbit(ctx, cfg.URL, "hexmill-load-check-"+cfg.RunID)
	if err != nil {
		return nil, nil, err
	}
	deliveries, err := declareAndConsume(conn, cfg)
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, deliveries, nil
}

func declareAndConsume(conn *amqp.Connection, cfg *CheckConfig) (<-chan amqp.Delivery, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("sink: channel: %w", err)
	}
	// A passive declaration that fails closes the channel: open another
	// and declare.
	if _, err := ch.QueueDeclarePassive(cfg.Queue, true, false, false, false, nil); err != nil {
		if ch, err = conn.Channel(); err != nil {
			return nil, fmt.Errorf("sink: channel: %w", err)
		}
		if _, err := ch.QueueDeclare(cfg.Queue, true, false, false, false, nil); err != nil {
			return nil, fmt.Errorf("sink: declare queue %s: %w", cfg.Queue, err)
		}
	}
	if cfg.Exchange != "" {
		if err := ch.ExchangeDeclarePassive(cfg.Exchange, cfg.ExchangeType, true, false, false, false, nil); err != nil {
			if ch, err = conn.Channel(); err != nil {
				return nil, fmt.Errorf("sink: channel: %w", err)
			}
			if err := ch.ExchangeDeclare(cfg.Exchange, cfg.ExchangeType, true, false, false, false, nil); err != nil {
				return nil, fmt.Errorf("sink: declare exchange %s: %w", cfg.Exchange, err)
			}
		}
		if err := ch.QueueBind(cfg.Queue, cfg.BindingKey, cfg.Exchange, false, nil); err != nil {
			return nil, fmt.Errorf("sink: bind %s to %s with %q: %w", cfg.Queue, cfg.Exchange, cfg.BindingKey, err)
		}
	}
	if err := ch.Qos(cfg.Prefetch, 0, false); err != nil {
		return nil, fmt.Errorf("sink: qos: %w", err)
	}
	deliveries, err := ch.Consume(cfg.Queue, "hexmill-load-"+cfg.RunID, false, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("sink: consume %s: %w", cfg.Queue, err)
	}
	return deliveries, nil
}

// consume records deliveries until Close, reconnecting when the
// connection drops.
func (c *Checker) consume(conn *amqp.Connection, deliveries <-chan amqp.Delivery) {
	backoff := time.Duration(0)
	for {
		c.drain(deliveries)
		_ = conn.Close()
		for {
			if c.ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 2*time.Second)
			if !wait(c.ctx, backoff) {
				return
			}
			var err error
			conn, deliveries, err = subscribe(c.ctx, &c.cfg)
			c.mu.Lock()
			c.consumeErr = err
			if err == nil {
				c.reconnects++
			}
			c.mu.Unlock()
			if err == nil {
				backoff = 0
				break
			}
		}
	}
}

// BatchAcker acks deliveries of one channel in batches: one ack
// (multiple) for at most 64 deliveries, or for what arrived before a lull,
// so the broker handles one ack per batch. Deliveries read but not yet
// acked come again after a reconnect. Its zero value is ready to use.
type BatchAcker struct{ unacked int }

// Ack records d as handled; waiting is how many deliveries are already
// buffered behind it (len of the deliveries channel).
func (b *BatchAcker) Ack(d amqp.Delivery, waiting int) {
	if b.unacked++; b.unacked >= 64 || waiting == 0 {
		_ = d.Ack(true)
		b.unacked = 0
	}
}

// drain records deliveries until the channel closes or Close.
func (c *Checker) drain(deliveries <-chan amqp.Delivery) {
	var acks BatchAcker
	for {
		select {
		case <-c.ctx.Done():
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			c.record(d.Body, time.Now())
			// A delivery that comes again is a duplicate, which the
			// report counts.
			acks.Ack(d, len(deliveries))
		}
	}
}

func (c *Checker) record(body []byte, now time.Time) {
	seq, at, err := parseAlert(body, c.cfg.RunID)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case errors.Is(err, errNotOurs):
		c.ignored++
		return
	case err != nil:
		c.malformed++
		return
	}
	if seq >= len(c.seen) {
		c.seen = slices.Grow(c.seen, seq+1-len(c.seen))[:seq+1]
	}
	c.seen[seq]++
	first := c.seen[seq] == 1
	if first {
		c.distinct++
		if c.expect != nil && c.expect.IsConfirmed(seq) {
			c.missing--
		}
	}
	c.deliveries = append(c.deliveries, delivery{seq: seq, recv: now.UnixNano(), at: at.UnixNano(), replays: !first})
	c.last = now
	close(c.changed)
	c.changed = make(chan struct{})
}

// Received is the number of distinct messages of the run received so far.
func (c *Checker) Received() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.distinct
}

// AwaitReceived waits until n distinct messages of the run were received:
// to inject a fault mid-stream.
func (c *Checker) AwaitReceived(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		got, changed := c.distinct, c.changed
		c.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("load: await %d received (have %d): %w", n, got, ctx.Err())
		case <-c.done:
			return fmt.Errorf("load: await %d received (have %d): checker closed", n, got)
		}
	}
}

// Wait waits until every message sent confirmed has been received, or no
// alert of the run arrived for QuietTimeout, and reports. The report is
// valid also when ctx ends the wait (the error is then ctx.Err()).
func (c *Checker) Wait(ctx context.Context, sent SendResult) (Report, error) {
	start := time.Now()
	c.mu.Lock()
	c.expect = &sent
	c.missing = 0
	for n := range sent.Count {
		if sent.IsConfirmed(n) && (n >= len(c.seen) || c.seen[n] == 0) {
			c.missing++
		}
	}
	var err error
	for c.missing > 0 {
		deadline := c.last
		if deadline.Before(start) {
			deadline = start
		}
		deadline = deadline.Add(c.cfg.QuietTimeout)
		d := time.Until(deadline)
		if d <= 0 {
			break
		}
		changed := c.changed
		c.mu.Unlock()
		t := time.NewTimer(d)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			err = fmt.Errorf("load: check: %w", ctx.Err())
		case <-c.done:
			err = errors.New("load: check: checker closed")
		}
		t.Stop()
		c.mu.Lock()
		if err != nil {
			break
		}
	}
	if err == nil && c.consumeErr != nil {
		err = fmt.Errorf("load: check: sink unreachable, the counts are incomplete: %w", c.consumeErr)
	}
	r := c.report(sent)
	c.mu.Unlock()
	return r, err
}

// Close stops consuming and deletes the queue when configured to.
func (c *Checker) Close() error {
	c.closeOnce.Do(func() {
		c.stop()
		<-c.done
		if !c.cfg.DeleteQueue {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := dialRabbit(ctx, c.cfg.URL, "hexmill-load-check-"+c.cfg.RunID)
		if err != nil {
			c.closeErr = fmt.Errorf("load: delete queue: %w", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err == nil {
			_, err = ch.QueueDelete(c.cfg.Queue, false, false, false)
		}
		if err != nil {
			c.closeErr = fmt.Errorf("load: delete queue %s: %w", c.cfg.Queue, err)
		}
	})
	return c.closeErr
}

// Check consumes the sink until every message of sent arrived or the
// quiet timeout, and reports. NewChecker before sending and Wait after
// lose nothing in between; Check suits a sink queue that already holds the
// run's alerts.
func Check(ctx context.Context, cfg CheckConfig, sent SendResult) (Report, error) {
	if cfg.RunID == "" {
		cfg.RunID = sent.RunID
	}
	c, err := NewChecker(ctx, cfg)
	if err != nil {
		return Report{RunID: sent.RunID}, err
	}
	r, err := c.Wait(ctx, sent)
	return r, errors.Join(err, c.Close())
}
