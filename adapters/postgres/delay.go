package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
)

// DelayStoreConfig configures a DelayStore.
type DelayStoreConfig struct {
	// Handlers are the handlers whose parked messages this store's poller
	// delivers, each through its function: it handles the message and
	// returns nil once the message is done with (handled, parked again
	// or poisoned), and the row is deleted then; an error leaves the row
	// to be claimed again after RetryBackoff. The message's context
	// carries the poller's, which ends when Stop gives up.
	Handlers map[string]func(msg *message.Message) error
	// PollInterval is how often the poller looks for due messages;
	// default 1s. A message is delivered at most about this long after
	// its due time (plus the time to deliver the messages before it).
	PollInterval time.Duration
	// BatchSize is how many due messages one round claims; default 100.
	BatchSize int
	// Concurrency is how many claimed messages are delivered at once;
	// default 16.
	Concurrency int
	// Lease is how long a claimed message is kept from other pollers
	// while it is delivered; default 1m. A process that dies with a
	// claim delays that message by up to Lease; a delivery that takes
	// longer may be delivered by another poller too.
	Lease time.Duration
	// RetryBackoff is the wait after a failed delivery or round; default
	// 1s.
	RetryBackoff time.Duration
}

// WithDefaults returns c with its unset settings set to their defaults.
func (c DelayStoreConfig) WithDefaults() DelayStoreConfig {
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.BatchSize == 0 {
		c.BatchSize = 100
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.Lease == 0 {
		c.Lease = time.Minute
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = time.Second
	}
	return c
}

// Validate reports a setting that cannot work.
func (c DelayStoreConfig) Validate() error {
	for h, f := range c.Handlers {
		if f == nil {
			return fmt.Errorf("delay store: the function of handler %q is nil", h)
		}
	}
	if c.PollInterval < 0 || c.BatchSize < 0 || c.Concurrency < 0 || c.Lease < 0 || c.RetryBackoff < 0 {
		return errors.New("delay store: poll interval, batch size, concurrency, lease and retry backoff must be positive")
	}
	return nil
}

// DelayStore parks messages in the hexmill_delayed_messages table
// (migration 0004) until they are due, and its poller hands each due
// message to its handler's function, then deletes it. Pollers of several
// replicas share the work: each claims due rows with FOR UPDATE SKIP
// LOCKED and a lease. Delivery is at least once: a crash between a
// delivery and the deletion of its row delivers it again after the lease.
type DelayStore struct {
	db     *DB
	cfg    DelayStoreConfig
	logger watermill.LoggerAdapter

	handlers []string
	cancel   context.CancelFunc // ends claiming (Stop begins)
	abort    context.CancelFunc // ends deliveries and statements (Stop gives up)
	done     chan struct{}
	start    sync.Once
	stop     sync.Once
}

// NewDelayStore returns a store over db's table; Start runs its poller.
// Park works without Start (a store with no handlers parks only).
func NewDelayStore(db *DB, cfg DelayStoreConfig, logger watermill.LoggerAdapter) (*DelayStore, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	s := &DelayStore{db: db, cfg: cfg.WithDefaults(), logger: logger.With(watermill.LogFields{"component": "delay_store"}), done: make(chan struct{})}
	for h := range cfg.Handlers {
		s.handlers = append(s.handlers, h)
	}
	slices.Sort(s.handlers)
	return s, nil
}

// Park stores msg (its UUID, metadata and payload) for handler, due after
// delay by the database's clock. It returns nil once the row committed.
func (s *DelayStore) Park(ctx context.Context, handler string, delay time.Duration, msg *message.Message) error {
	metadata := map[string]string(msg.Metadata)
	if metadata == nil {
		metadata = map[string]string{}
	}
	_, err := s.db.pool.Exec(ctx, `INSERT INTO hexmill_delayed_messages (handler, due_at, message_id, metadata, payload)
		VALUES ($1, now() + $2::bigint * interval '1 millisecond', $3, $4, $5)`,
		handler, delay.Milliseconds(), msg.UUID, metadata, payloadOf(msg))
	if err != nil {
		return fmt.Errorf("park message %s: %w", msg.UUID, err)
	}
	return nil
}

func payloadOf(msg *message.Message) []byte {
	if msg.Payload == nil {
		return []byte{}
	}
	return msg.Payload
}

// Start starts the poller's goroutine; Stop waits for it.
func (s *DelayStore) Start() {
	s.start.Do(func() {
		claim, cancel := context.WithCancel(context.Background())
		hard, abort := context.WithCancel(context.Background())
		s.cancel, s.abort = cancel, abort
		go func() {
			defer close(s.done)
			s.run(claim, hard)
		}()
	})
}

// StopClaiming makes the poller claim no more rows; deliveries under way
// go on. Stop calls it too.
func (s *DelayStore) StopClaiming() {
	s.Start()
	s.cancel()
}

// Stop stops the poller: it claims nothing more, waits for the deliveries
// under way and deletes their rows, and returns once its goroutine has.
// When ctx ends first, the deliveries' context ends, and their rows keep
// their lease (they are claimed again after it).
func (s *DelayStore) Stop(ctx context.Context) error {
	s.StopClaiming()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		s.abort()
		<-s.done
		return fmt.Errorf("delay store stop: %w", ctx.Err())
	}
}

func (s *DelayStore) run(claim, hard context.Context) {
	defer s.abort()
	if len(s.handlers) == 0 {
		<-claim.Done()
		return
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-claim.Done():
			return
		case <-timer.C:
		}
		n, err := s.round(claim, hard)
		wait := s.cfg.PollInterval
		switch {
		case err != nil:
			if claim.Err() == nil {
				s.logger.Error("Delay store round failed; retrying", err, nil)
			}
			wait = s.cfg.RetryBackoff
		case n == s.cfg.BatchSize:
			wait = 0 // more rows may be due
		}
		timer.Reset(wait)
	}
}

type delayedRow struct {
	id        int64
	handler   string
	messageID string
	metadata  map[string]string
	payload   []byte
	dueAt     time.Time
}

// round claims the due rows of one batch and delivers them; it returns
// how many it claimed.
func (s *DelayStore) round(claim, hard context.Context) (int, error) {
	// The claim runs on hard: cancelling it half-way could commit leases
	// whose rows are never read, and they would wait out the lease.
	if claim.Err() != nil {
		return 0, nil
	}
	rows, err := s.db.pool.Query(hard, `UPDATE hexmill_delayed_messages SET lease_until = now() + $3::bigint * interval '1 millisecond'
		WHERE id IN (SELECT id FROM hexmill_delayed_messages
			WHERE handler = ANY($1) AND due_at <= now() AND (lease_until IS NULL OR lease_until <= now())
			ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)
		RETURNING id, handler, message_id, metadata, payload, due_at`, s.handlers, s.cfg.BatchSize, s.cfg.Lease.Milliseconds())
	if err != nil {
		return 0, fmt.Errorf("claim due messages: %w", err)
	}
	batch, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (delayedRow, error) {
		var d delayedRow
		err := row.Scan(&d.id, &d.handler, &d.messageID, &d.metadata, &d.payload, &d.dueAt)
		return d, err
	})
	if err != nil {
		return 0, fmt.Errorf("claim due messages: %w", err)
	}
	slices.SortFunc(batch, func(a, b delayedRow) int { return a.dueAt.Compare(b.dueAt) })

	sem := make(chan struct{}, s.cfg.Concurrency)
	var wg sync.WaitGroup
	var unclaimed []int64 // claimed, but not delivered before Stop
	for _, d := range batch {
		select {
		case sem <- struct{}{}:
		case <-claim.Done():
		}
		if claim.Err() != nil {
			unclaimed = append(unclaimed, d.id)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = s.deliver(hard, d) // logged; the row waits for the next claim
		}()
	}
	wg.Wait()
	if len(unclaimed) > 0 {
		// Back to the table at once, for the next poller to start.
		ctx, cancel := context.WithTimeout(hard, releaseTimeout)
		defer cancel()
		if _, err := s.db.pool.Exec(ctx, `UPDATE hexmill_delayed_messages SET lease_until = NULL WHERE id = ANY($1)`, unclaimed); err != nil {
			s.logger.Info("Delay store could not release its claims; they are claimed again after their lease", watermill.LogFields{"err": err.Error()})
		}
	}
	return len(batch), nil
}

// deliver hands d to its handler's function and deletes its row when that
// succeeded; otherwise the row is kept and claimed again after
// RetryBackoff.
func (s *DelayStore) deliver(ctx context.Context, d delayedRow) error {
	msg := message.NewMessage(d.messageID, d.payload)
	if d.metadata != nil {
		msg.Metadata = d.metadata
	}
	msg.SetContext(ctx)
	if err := s.cfg.Handlers[d.handler](msg); err != nil {
		if _, uerr := s.db.pool.Exec(ctx, `UPDATE hexmill_delayed_messages SET lease_until = now() + $2::bigint * interval '1 millisecond' WHERE id = $1`,
			d.id, s.cfg.RetryBackoff.Milliseconds()); uerr != nil && ctx.Err() == nil {
			s.logger.Error("Delay store could not shorten a lease; the message is claimed again after it", uerr, watermill.LogFields{"message_id": d.messageID})
		}
		return err
	}
	if _, err := s.db.pool.Exec(ctx, `DELETE FROM hexmill_delayed_messages WHERE id = $1`, d.id); err != nil {
		// Delivered but not deleted: delivered again after the lease.
		if ctx.Err() == nil {
			s.logger.Error("Delay store could not delete a delivered message; it is delivered again after its lease", err, watermill.LogFields{"message_id": d.messageID})
		}
		return err
	}
	return nil
}
