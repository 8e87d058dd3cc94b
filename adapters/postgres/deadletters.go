package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/jackc/pgx/v5"

	"github.com/hexmill/hexmill/adapters/transport"
)

// DeadLetter is one row of hexmill_dead_letters: a poisoned message.
type DeadLetter struct {
	ID        int64
	Handler   string // the handler that poisoned it
	Topic     string // its binding's topic
	Transport string // its binding's transport
	Reason    string
	MessageID string
	// Attempts is the message's delivery_attempt metadata, 1 without it.
	Attempts int
	// FirstFailed is when it was first poisoned (before any replay),
	// LastFailed when it was poisoned this time.
	FirstFailed, LastFailed time.Time
	Metadata                map[string]string
	Payload                 []byte
}

// DeadLetterFilter selects dead letters; its zero value selects all.
type DeadLetterFilter struct {
	IDs     []int64
	Handler string
	// Reason matches a part of the reason, ignoring case.
	Reason string
	// OlderThan and NewerThan compare the age of the last failure by the
	// database's clock; 0 does not filter.
	OlderThan, NewerThan time.Duration
	// AfterID selects only ids above it: the next page after a row.
	AfterID int64
	// Limit bounds how many DeadLetters returns and PurgeDeadLetters
	// deletes, the oldest first; 0 does not bound.
	Limit int
}

func (f DeadLetterFilter) where() (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		conds = append(conds, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if len(f.IDs) > 0 {
		add("id = ANY(?)", f.IDs)
	}
	if f.Handler != "" {
		add("handler = ?", f.Handler)
	}
	if f.Reason != "" {
		add("strpos(lower(reason), lower(?)) > 0", f.Reason)
	}
	if f.OlderThan > 0 {
		add("last_failed_at < now() - ? * interval '1 second'", f.OlderThan.Seconds())
	}
	if f.NewerThan > 0 {
		add("last_failed_at >= now() - ? * interval '1 second'", f.NewerThan.Seconds())
	}
	if f.AfterID > 0 {
		add("id > ?", f.AfterID)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// DeadLetterPublisher is the poison target of poison.transport postgres:
// a watermill publisher whose Publish inserts each message into
// hexmill_dead_letters (the topic is ignored) and returns once the rows
// are committed. It reads the poison metadata the runtime writes.
type DeadLetterPublisher struct{ db *DB }

var _ message.Publisher = DeadLetterPublisher{}

// DeadLetterPublisher returns the database's dead-letter publisher.
func (db *DB) DeadLetterPublisher() DeadLetterPublisher { return DeadLetterPublisher{db: db} }

// Publish implements message.Publisher.
func (p DeadLetterPublisher) Publish(_ string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		md := map[string]string(msg.Metadata)
		if md == nil {
			md = map[string]string{}
		}
		now := time.Now().UTC()
		last := parseTime(md[transport.MetadataPoisonedAt], now)
		first := parseTime(md[transport.MetadataFirstPoisonedAt], last)
		attempts, err := strconv.Atoi(md[transport.MetadataDeliveryAttempt])
		if err != nil || attempts < 1 {
			attempts = 1
		}
		_, err = p.db.pool.Exec(msg.Context(), `INSERT INTO hexmill_dead_letters
			(handler, topic, transport, reason, message_id, attempts, metadata, payload, first_failed_at, last_failed_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			md[middleware.PoisonedHandlerKey], md[middleware.PoisonedTopicKey], md[middleware.PoisonedSubscriberKey],
			md[middleware.ReasonForPoisonedKey], msg.UUID, attempts, md, []byte(msg.Payload), first, last)
		if err != nil {
			return fmt.Errorf("dead letter %s: %w", msg.UUID, err)
		}
	}
	return nil
}

// Close implements message.Publisher; the database is its owner's to close.
func (DeadLetterPublisher) Close() error { return nil }

func parseTime(s string, otherwise time.Time) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t
	}
	return otherwise
}

// limit is f's LIMIT clause, empty when it has none.
func (f DeadLetterFilter) limit() string {
	if f.Limit > 0 {
		return " LIMIT " + strconv.Itoa(f.Limit)
	}
	return ""
}

// DeadLetters returns the dead letters f selects, oldest first.
func (db *DB) DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	where, args := f.where()
	rows, err := db.pool.Query(ctx, `SELECT id, handler, topic, transport, reason, message_id, attempts, metadata, payload,
		first_failed_at, last_failed_at FROM hexmill_dead_letters`+where+` ORDER BY id`+f.limit(), args...)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (DeadLetter, error) {
		var d DeadLetter
		err := row.Scan(&d.ID, &d.Handler, &d.Topic, &d.Transport, &d.Reason, &d.MessageID, &d.Attempts, &d.Metadata, &d.Payload,
			&d.FirstFailed, &d.LastFailed)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	return out, nil
}

// DeleteDeadLetter deletes the dead letter id; it reports whether it was
// there.
func (db *DB) DeleteDeadLetter(ctx context.Context, id int64) (bool, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM hexmill_dead_letters WHERE id = $1`, id)
	if err != nil {
		return false, fmt.Errorf("delete dead letter %d: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// PurgeDeadLetters deletes the dead letters f selects and returns how
// many.
func (db *DB) PurgeDeadLetters(ctx context.Context, f DeadLetterFilter) (int64, error) {
	where, args := f.where()
	if f.Limit > 0 {
		where = ` WHERE id IN (SELECT id FROM hexmill_dead_letters` + where + ` ORDER BY id` + f.limit() + `)`
	}
	tag, err := db.pool.Exec(ctx, `DELETE FROM hexmill_dead_letters`+where, args...)
	if err != nil {
		return 0, fmt.Errorf("purge dead letters: %w", err)
	}
	return tag.RowsAffected(), nil
}

// CountDeadLetters returns the number of dead letters per handler.
func (db *DB) CountDeadLetters(ctx context.Context) (map[string]int, error) {
	rows, err := db.pool.Query(ctx, `SELECT handler, count(*) FROM hexmill_dead_letters GROUP BY handler`)
	if err != nil {
		return nil, fmt.Errorf("count dead letters: %w", err)
	}
	counts := map[string]int{}
	var handler string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&handler, &n}, func() error {
		counts[handler] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count dead letters: %w", err)
	}
	return counts, nil
}
