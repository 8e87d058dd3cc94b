package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RelayConfig configures the outbox relay.
type RelayConfig struct {
	// Publishers are the real publishers by destination (the name given
	// to NewOutboxPublisher).
	Publishers map[string]message.Publisher `yaml:"-"`
	// PollInterval is how often the relay looks for new rows when nobody
	// called Notify; default 200ms. Standby relays try to take over as
	// often.
	PollInterval time.Duration `yaml:"poll_interval"`
	// BatchSize is how many rows one round reads; default 100.
	BatchSize int `yaml:"batch_size"`
	// RetryBackoff is the wait after a failed publish or a database error;
	// default 500ms.
	RetryBackoff time.Duration `yaml:"retry_backoff"`
}

// WithDefaults returns c with its unset timings set to their defaults.
func (c RelayConfig) WithDefaults() RelayConfig {
	if c.PollInterval == 0 {
		c.PollInterval = 200 * time.Millisecond
	}
	if c.BatchSize == 0 {
		c.BatchSize = 100
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 500 * time.Millisecond
	}
	return c
}

// Validate reports a setting that cannot work.
func (c RelayConfig) Validate() error {
	if len(c.Publishers) == 0 {
		return errors.New("outbox relay: no publishers; give one per destination used by the OutboxPublishers")
	}
	for dest, p := range c.Publishers {
		if p == nil {
			return fmt.Errorf("outbox relay: publisher for %q is nil", dest)
		}
	}
	if c.PollInterval < 0 || c.BatchSize < 0 || c.RetryBackoff < 0 {
		return errors.New("outbox relay: poll_interval, batch_size and retry_backoff must be positive")
	}
	return nil
}

// Relay publishes the outbox's rows to their destinations' publishers, in
// the order of their ids, one message per Publish call, and deletes each
// row once its publisher returned nil (confirmed). Among replicas one
// relay is active: it holds a PostgreSQL advisory lock on its own
// connection; the others stand by and take over when that connection
// ends. Publishing in id order from one relay keeps each aggregate's
// events in order.
//
// A publish that fails stops the round at that row: it and the rows after
// it are tried again after RetryBackoff, so nothing is skipped. A crash
// between a publish and the deletion of its row publishes it again: the
// relay is at least once, duplicates only then.
type Relay struct {
	db     *DB
	cfg    RelayConfig
	logger watermill.LoggerAdapter

	wake   chan struct{}
	stopCh chan context.Context
	cancel context.CancelFunc
	done   chan struct{}
	start  sync.Once
	stop   sync.Once

	conn *pgxpool.Conn // held while this relay is the active one
}

// NewRelay returns a relay over db's outbox; Start runs it.
func NewRelay(db *DB, cfg RelayConfig, logger watermill.LoggerAdapter) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	r := &Relay{
		db: db, cfg: cfg.WithDefaults(), logger: logger.With(watermill.LogFields{"component": "outbox_relay"}),
		wake: make(chan struct{}, 1), stopCh: make(chan context.Context, 1), done: make(chan struct{}),
	}
	// A transaction of db that wrote to the outbox wakes the relay once it
	// committed (InTx, HandleOnce, DedupMiddleware).
	notify := r.Notify
	db.outboxCommitted.Store(&notify)
	return r, nil
}

// Notify wakes the relay now instead of at its next poll, e.g. right after
// a transaction that wrote to the outbox committed. It never blocks.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Start starts the relay's goroutine; Stop waits for it.
func (r *Relay) Start() {
	r.start.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		r.cancel = cancel
		go func() {
			defer close(r.done)
			r.run(ctx)
		}()
	})
}

// Stop stops the relay: it first relays what the outbox holds (the events
// of the handlers that finished before Stop), until the outbox is empty or
// ctx ends, then returns once its goroutine has. Call it after the
// handlers stopped and before the publishers close. Rows left are relayed
// by the next relay to start.
//
// When ctx ends, the database's statements end with it, and so does a
// Publish in flight whose publisher honours the message's context (each
// message carries ctx; hexmill's MQTT publisher does): Stop then returns
// within ctx. A publisher that ignores it holds Stop until its own
// timeout.
func (r *Relay) Stop(ctx context.Context) error {
	r.Start() // Stop without Start: nothing to drain but a goroutine to end
	r.stop.Do(func() { r.stopCh <- ctx })
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		r.cancel()
		<-r.done
		return fmt.Errorf("outbox relay stop: %w", ctx.Err())
	}
}

func (r *Relay) run(ctx context.Context) {
	defer r.release()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var wait time.Duration
		select {
		case drainCtx := <-r.stopCh:
			r.drain(drainCtx)
			return
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.wake:
		}
		n, err := r.round(ctx)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				r.logger.Error("Outbox relay round failed; retrying", err, nil)
			}
			wait = r.cfg.RetryBackoff
		case n == r.cfg.BatchSize:
			wait = 0 // more rows wait
		default:
			wait = r.cfg.PollInterval
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// drain relays until the outbox is empty, a round fails or ctx ends.
func (r *Relay) drain(ctx context.Context) {
	for ctx.Err() == nil {
		n, err := r.round(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.logger.Error("Outbox relay could not drain before stopping; the rows stay for the next relay", err, nil)
			}
			return
		}
		if n == 0 {
			return
		}
	}
}

// round takes the lead if it can and relays one batch; it returns how many
// rows it relayed (0 when another relay leads).
func (r *Relay) round(ctx context.Context) (int, error) {
	if r.conn == nil {
		lead, err := r.lead(ctx)
		if err != nil || !lead {
			return 0, err
		}
	}
	n, err := r.relayBatch(ctx)
	if err != nil && !errors.Is(err, errPublish) {
		// The connection may be broken: give it (and the lock) up and
		// take the lead again next round.
		r.release()
	}
	return n, err
}

var errPublish = errors.New("publish")

func (r *Relay) lockKey() string { return "hexmill.outbox." + r.db.schema }

func (r *Relay) lead(ctx context.Context) (bool, error) {
	conn, err := r.db.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("acquire: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext($1))`, r.lockKey()).Scan(&ok); err != nil {
		conn.Release()
		return false, fmt.Errorf("lock: %w", err)
	}
	if !ok {
		conn.Release()
		return false, nil
	}
	r.conn = conn
	r.logger.Info("Outbox relay is the active one", nil)
	return true, nil
}

// releaseTimeout bounds the goodbye (Terminate) to the server when the
// relay gives up its connection; the socket is closed after it either way.
const releaseTimeout = time.Second

// release gives up the lead: the connection is closed, which frees the
// advisory lock whatever state the connection is in.
func (r *Relay) release() {
	if r.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	_ = r.conn.Conn().Close(ctx)
	r.conn.Release()
	r.conn = nil
}

type outboxRow struct {
	id          int64
	destination string
	topic       string
	messageID   string
	metadata    map[string]string
	payload     []byte
}

func (r *Relay) relayBatch(ctx context.Context) (int, error) {
	rows, err := r.conn.Query(ctx, `SELECT id, destination, topic, message_id, metadata, payload
		FROM hexmill_outbox ORDER BY id LIMIT $1`, r.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	batch, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (outboxRow, error) {
		var o outboxRow
		err := row.Scan(&o.id, &o.destination, &o.topic, &o.messageID, &o.metadata, &o.payload)
		return o, err
	})
	if err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	published := make([]int64, 0, len(batch))
	var perr error
	for _, o := range batch {
		if perr = r.publish(ctx, o); perr != nil {
			break
		}
		published = append(published, o.id)
	}
	if len(published) > 0 {
		if _, err := r.conn.Exec(ctx, `DELETE FROM hexmill_outbox WHERE id = ANY($1)`, published); err != nil {
			// Published but not deleted: they are published again.
			return 0, fmt.Errorf("delete relayed rows: %w", err)
		}
	}
	return len(published), perr
}

func (r *Relay) publish(ctx context.Context, o outboxRow) error {
	pub, ok := r.cfg.Publishers[o.destination]
	if !ok {
		return fmt.Errorf("%w: outbox row %d: no publisher for destination %q; add it to the relay's publishers", errPublish, o.id, o.destination)
	}
	msg := message.NewMessage(o.messageID, o.payload)
	msg.SetContext(ctx)
	if o.metadata != nil {
		msg.Metadata = o.metadata // scanned for this row alone
	}
	if err := pub.Publish(o.topic, msg); err != nil {
		return fmt.Errorf("%w: outbox row %d to %s %s: %w", errPublish, o.id, o.destination, o.topic, err)
	}
	return nil
}
