package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/ports"
)

// ErrNoMessageID is returned for a message without an ID: without one a
// redelivery cannot be told from a new message.
var ErrNoMessageID = errors.New("message has no ID; the transport adapter must set one to handle it idempotently")

// HandleOnce runs fn at most once per (handler, messageID) with effect: in
// one transaction it records the message in hexmill_processed_messages
// (INSERT ... ON CONFLICT DO NOTHING) and, if the row is new, runs fn with
// the transaction in its context (ports.TxFrom, TxFrom; events go to the
// outbox through OutboxPublisher), then commits. If the row existed, the
// message was handled before: fn is not run and HandleOnce returns
// (false, nil), so the caller acknowledges it. If fn or the commit fails,
// nothing is recorded and the error is returned: the message is retried.
//
// Two deliveries of one message at once (two replicas) are serialised by
// the primary key: the second waits for the first transaction and then
// finds the row, or inserts it if the first rolled back.
func (db *DB) HandleOnce(ctx context.Context, handler, messageID string, fn func(ctx context.Context) error) (ran bool, err error) {
	if messageID == "" {
		return false, fmt.Errorf("handle once %s: %w", handler, ErrNoMessageID)
	}
	err = db.InTx(ctx, func(ctx context.Context) error {
		tx := txFrom(ctx).tx
		tag, err := tx.Exec(ctx, `INSERT INTO hexmill_processed_messages (handler, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, handler, messageID)
		if err != nil {
			return fmt.Errorf("handle once %s: record %s: %w", handler, messageID, err)
		}
		if tag.RowsAffected() == 0 {
			return nil // handled before
		}
		ran = true
		return fn(ctx)
	})
	if err != nil {
		return false, err
	}
	return ran, nil
}

// DedupMiddleware makes a watermill handler idempotent: it runs h through
// HandleOnce under the name handler and the message's UUID (the transport's
// message ID), with the transaction in msg.Context() while h runs. A
// duplicate is acknowledged without running h. Messages h returns are
// published by the router after the commit, outside the transaction: to
// publish atomically, publish through an OutboxPublisher with the
// message's context.
func DedupMiddleware(db *DB, handler string) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			orig := msg.Context()
			defer msg.SetContext(orig)
			var produced []*message.Message
			_, err := db.HandleOnce(orig, handler, msg.UUID, func(ctx context.Context) error {
				msg.SetContext(ctx)
				var err error
				produced, err = h(msg)
				return err
			})
			if err != nil {
				return nil, err
			}
			return produced, nil
		}
	}
}

// DeleteProcessedOlderThan deletes the records of messages handled more
// than age ago by the database's clock, in batches of at most 10 000 rows, and returns how many it deleted. A
// message redelivered after its record is gone is handled again: keep the
// retention longer than the brokers' redelivery horizon.
func (db *DB) DeleteProcessedOlderThan(ctx context.Context, age time.Duration) (int64, error) {
	var total int64
	for {
		tag, err := db.pool.Exec(ctx, `DELETE FROM hexmill_processed_messages WHERE ctid IN (
			SELECT ctid FROM hexmill_processed_messages WHERE processed_at < now() - $1 * interval '1 second' LIMIT 10000)`, age.Seconds())
		if err != nil {
			return total, fmt.Errorf("delete processed messages: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			return total, nil
		}
	}
}

// RetentionConfig says how long processed-message records are kept.
type RetentionConfig struct {
	// Keep is how long a record is kept; default 7 days.
	Keep time.Duration `yaml:"keep"`
	// Every is how often old records are deleted; default 1 hour.
	Every time.Duration `yaml:"every"`
}

// WithDefaults returns c with its unset fields set to their defaults.
func (c RetentionConfig) WithDefaults() RetentionConfig {
	if c.Keep == 0 {
		c.Keep = 7 * 24 * time.Hour
	}
	if c.Every == 0 {
		c.Every = time.Hour
	}
	return c
}

// Validate reports a setting that cannot work.
func (c RetentionConfig) Validate() error {
	if c.Keep < 0 {
		return ports.FieldErrorf("keep", "%s; want a positive duration longer than the brokers redeliver, e.g. 168h (0: 7 days)", c.Keep)
	}
	if c.Every < 0 {
		return ports.FieldErrorf("every", "%s; want a positive duration, e.g. 1h (0: 1 hour)", c.Every)
	}
	return nil
}

// RunRetention deletes old processed-message records every c.Every until
// ctx is cancelled, then returns. A failed round is logged and retried at
// the next one. The caller runs it in a goroutine it waits for.
func (db *DB) RunRetention(ctx context.Context, c RetentionConfig) {
	c = c.WithDefaults()
	t := time.NewTicker(c.Every)
	defer t.Stop()
	for {
		n, err := db.DeleteProcessedOlderThan(ctx, c.Keep)
		if err != nil && ctx.Err() == nil {
			db.logger.Error("Processed-message retention failed; retried next round", err, nil)
		} else if n > 0 {
			db.logger.Debug("Processed-message records deleted", map[string]any{"count": n})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
