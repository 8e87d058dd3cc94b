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

func (s postgresStore) List(ctx context.Context, f Filter) ([]Letter, error) {
	pf, err := s.filter(f)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.DeadLetters(ctx, pf)
	if err != nil {
		return nil, err
	}
	out := make([]Letter, 0, len(rows))
	for _, r := range rows {
		out = append(out, Letter{ID: strconv.FormatInt(r.ID, 10), Handler: r.Handler, Topic: r.Topic, Transport: r.Transport, Reason: r.Reason,
			MessageID: r.MessageID, Attempts: r.Attempts, First: r.FirstFailed, Last: r.LastFailed, Size: len(r.Payload),
			Metadata: r.Metadata, Payload: r.Payload})
	}
	return out, nil
}

func (s postgresStore) Replay(ctx context.Context, f Filter, send func(context.Context, Letter) error) (int, error) {
	letters, err := s.List(ctx, f)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range letters {
		if err := send(ctx, l); err != nil {
			return n, err
		}
		id, _ := strconv.ParseInt(l.ID, 10, 64)
		if _, err := s.db.DeleteDeadLetter(ctx, id); err != nil {
			return n, fmt.Errorf("%w (dead letter %s was replayed and stays: a second replay sends it again)", err, l.ID)
		}
		n++
	}
	return n, nil
}

func (s postgresStore) Purge(ctx context.Context, f Filter) (int, error) {
	pf, err := s.filter(f)
	if err != nil {
		return 0, err
	}
	n, err := s.db.PurgeDeadLetters(ctx, pf)
	return int(n), err
}

func (s postgresStore) Close() error { return s.db.Close() }
