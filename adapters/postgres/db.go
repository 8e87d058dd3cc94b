package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hexmill/hexmill/ports"
)

// DB is a pool of connections to one database and schema.
type DB struct {
	pool *pgxpool.Pool // nil until Open
	// poolConfig is the pool's configuration, a function so that no
	// formatting of a DB shows the password it holds.
	poolConfig func() *pgxpool.Config
	schema     string
	logger     watermill.LoggerAdapter
	// outboxCommitted is called after a transaction that wrote to the
	// outbox committed: its relay's Notify, once there is a relay.
	outboxCommitted atomic.Pointer[func()]
}

// New validates cfg and opens the pool (Prepare, then Open). It does not
// connect: the first use does, and Ready tells whether the database
// answers.
func New(cfg Config, logger watermill.LoggerAdapter) (*DB, error) {
	db, err := Prepare(cfg, logger)
	if err != nil {
		return nil, err
	}
	if err := db.Open(); err != nil {
		return nil, err
	}
	return db, nil
}

// Prepare validates cfg and returns a DB that Open opens: until then it
// has no pool, starts no goroutine and makes no connection, so that a
// service can hand it to its components while it is being built (and
// only checking its configuration) and open it when it starts.
func Prepare(cfg Config, logger watermill.LoggerAdapter) (*DB, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	pc, err := cfg.poolConfig()
	if err != nil {
		return nil, err
	}
	return &DB{poolConfig: func() *pgxpool.Config { return pc.Copy() }, schema: cfg.Schema, logger: logger}, nil
}

// Open creates the pool; with min_conns above 0 the pool starts
// connecting. Open a DB once, before any other use.
func (db *DB) Open() error {
	if db.pool != nil {
		return errors.New("postgres: opened twice")
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), db.poolConfig())
	if err != nil {
		return fmt.Errorf("postgres pool: %w", err)
	}
	db.pool = pool
	return nil
}

// Pool is the pgx pool, for a fork's store adapter that needs more than
// ports.Tx offers; nil until Open.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Schema is the schema the tables live in.
func (db *DB) Schema() string { return db.schema }

// Ready returns nil when the database answers a round trip within ctx.
func (db *DB) Ready(ctx context.Context) error {
	if db.pool == nil {
		return errors.New("postgres not ready: not open")
	}
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres not ready: %w", err)
	}
	return nil
}

// closeWait bounds Close: see CloseContext.
const closeWait = 5 * time.Second

// Close is CloseContext without a deadline of the caller's: it returns
// within 5 s.
func (db *DB) Close() error { return db.CloseContext(context.Background()) }

// CloseContext closes the pool: it waits for the connections in use to be
// returned and for pgx to close them, until ctx ends or 5 s passed. A
// connection whose statement was interrupted (a database that stopped
// answering) takes pgx up to 15 s to close (it sends the server a cancel
// request first); past the bound CloseContext returns an error and leaves
// pgx to finish in the background, which ends by pgx's own deadline.
func (db *DB) CloseContext(ctx context.Context) error {
	if db.pool == nil {
		return nil
	}
	done := make(chan struct{})
	go func() { // ends with pgx's own deadline on closing a connection
		db.pool.Close()
		close(done)
	}()
	bound := time.NewTimer(closeWait)
	defer bound.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("postgres: close: connections still closing: %w", ctx.Err())
	case <-bound.C:
		return fmt.Errorf("postgres: close: connections still closing after %s (the database stopped answering?)", closeWait)
	}
}

// InTx runs fn in a transaction whose ports.Tx (and pgx.Tx, see TxFrom) is
// in fn's context; it commits when fn returns nil and rolls back otherwise.
//
// Once a transaction that wrote to the outbox committed, the relay is
// woken at once rather than at its next poll.
func (db *DB) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	pt := &portsTx{tx: tx}
	if err := fn(ports.WithTx(ctx, pt)); err != nil {
		// A rollback error adds nothing: the transaction is gone either way.
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if notify := db.outboxCommitted.Load(); pt.outbox && notify != nil {
		(*notify)()
	}
	return nil
}

// TxFrom returns the pgx transaction ctx carries, for a store adapter
// written on pgx. Domain code uses ports.TxFrom instead.
func TxFrom(ctx context.Context) (pgx.Tx, bool) {
	if pt := txFrom(ctx); pt != nil {
		return pt.tx, true
	}
	return nil, false
}

func txFrom(ctx context.Context) *portsTx {
	t, _ := ports.TxFrom(ctx)
	pt, _ := t.(*portsTx)
	return pt
}

// portsTx implements ports.Tx on a pgx transaction, and notes whether the
// transaction wrote to the outbox (a Tx is used by one goroutine).
type portsTx struct {
	tx     pgx.Tx
	outbox bool
}

func (t *portsTx) Exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, sql, args...)
	return tag.RowsAffected(), err
}

func (t *portsTx) QueryRow(ctx context.Context, sql string, args ...any) ports.Row {
	return portsRow{t.tx.QueryRow(ctx, sql, args...)}
}

type portsRow struct{ row pgx.Row }

func (r portsRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return errors.Join(ports.ErrNoRows, err)
	}
	return err
}
