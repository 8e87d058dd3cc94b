package dlq

import (
	"context"
	"fmt"
	"strconv"

	"github.com/hexmill/hexmill/adapters/postgres"
)

// postgresStore is hexmill_dead_letters (poison.transport postgres).
type postgresStore struct{ db *postgres.DB }

func (s postgresStore) filter(f Filter) (postgres.DeadLetterFilter, error) {
	pf := postgres.DeadLetterFilter{Handler: f.Handler, Reason: f.Reason, OlderThan: f.OlderThan, NewerThan: f.NewerThan}
	for _, id := range f.IDs {
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil || n < 1 {
			return pf, usageError(fmt.Sprintf("%q is not a dead letter ID here: on PostgreSQL an ID is the row's number, as list shows it", id))
		}
		pf.IDs = append(pf.IDs, n)
	}
	return pf, nil
}

// page is how many rows a read holds at a time, payloads included.
const page = 100

// each hands the dead letters f selects to visit, oldest first, reading
// them a page at a time, up to f.Max. It stops when visit returns false
// or an error, and with a maxError once it has read f.Max and there are
// more.
func (s postgresStore) each(ctx context.Context, f Filter, visit func(Letter) (bool, error)) error {
	pf, err := s.filter(f)
	if err != nil {
		return err
	}
	for n := 0; ; {
		// One more than the bound, to tell whether there are more.
		pf.Limit = min(page, f.max()+1-n)
		rows, err := s.db.DeadLetters(ctx, pf)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if n == f.max() {
				return maxError{max: n}
			}
			n++
			more, err := visit(Letter{ID: strconv.FormatInt(r.ID, 10), Handler: r.Handler, Topic: r.Topic, Transport: r.Transport,
				Reason: r.Reason, MessageID: r.MessageID, Attempts: r.Attempts, First: r.FirstFailed, Last: r.LastFailed,
				Size: len(r.Payload), Metadata: r.Metadata, Payload: r.Payload})
			if !more || err != nil {
				return err
			}
			pf.AfterID = r.ID
		}
		if len(rows) < pf.Limit {
			return nil
		}
	}
}

func (s postgresStore) List(ctx context.Context, f Filter, visit func(Letter) bool) error {
	return s.each(ctx, f, func(l Letter) (bool, error) { return visit(l), nil })
}

func (s postgresStore) Replay(ctx context.Context, f Filter, send func(context.Context, Letter) error) (int, error) {
	n := 0
	err := s.each(ctx, f, func(l Letter) (bool, error) {
		if err := send(ctx, l); err != nil {
			return false, err
		}
		id, _ := strconv.ParseInt(l.ID, 10, 64)
		if _, err := s.db.DeleteDeadLetter(ctx, id); err != nil {
			return false, fmt.Errorf("%w (dead letter %s was replayed and stays: a second replay sends it again)", err, l.ID)
		}
		n++
		return true, nil
	})
	return n, err
}

// Purge deletes the oldest f.Max dead letters f selects, in one
// statement.
func (s postgresStore) Purge(ctx context.Context, f Filter) (int, error) {
	pf, err := s.filter(f)
	if err != nil {
		return 0, err
	}
	pf.Limit = f.max()
	n, err := s.db.PurgeDeadLetters(ctx, pf)
	if err != nil || int(n) < pf.Limit {
		return int(n), err
	}
	pf.Limit = 1
	more, err := s.db.DeadLetters(ctx, pf)
	if err == nil && len(more) > 0 {
		err = maxError{max: f.max()}
	}
	return int(n), err
}

func (s postgresStore) Close() error { return s.db.Close() }
