package postgres_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/ports"
)

// setStatus is a store written against ports.Tx, as a fork's domain-side
// code would be: it counts its runs in the table too.
func setStatus(ctx context.Context, device, status string) error {
	tx, ok := ports.TxFrom(ctx)
	if !ok {
		return errors.New("no transaction in the context")
	}
	_, err := tx.Exec(ctx, `INSERT INTO devices (id, status, runs) VALUES ($1, $2, 1)
		ON CONFLICT (id) DO UPDATE SET status = excluded.status, runs = devices.runs + 1`, device, status)
	return err
}

func newDedupDB(t *testing.T) *postgres.DB {
	db := newDB(t, postgres.Config{})
	if _, err := db.Pool().Exec(context.Background(), `CREATE TABLE devices (id text PRIMARY KEY, status text NOT NULL, runs int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestHandleOnce(t *testing.T) {
	db := newDedupDB(t)
	ctx := context.Background()

	// A duplicate is skipped, and reported as not run.
	for i, wantRan := range []bool{true, false, false} {
		ran, err := db.HandleOnce(ctx, "status", "m1", func(ctx context.Context) error { return setStatus(ctx, "d1", "online") })
		if err != nil || ran != wantRan {
			t.Fatalf("delivery %d: ran=%v err=%v; want ran=%v", i, ran, err, wantRan)
		}
	}
	// The same ID under another handler is another message.
	if ran, err := db.HandleOnce(ctx, "audit", "m1", func(context.Context) error { return nil }); err != nil || !ran {
		t.Fatalf("other handler: ran=%v err=%v", ran, err)
	}
	if n := count(t, db, `SELECT runs FROM devices WHERE id = 'd1'`); n != 1 {
		t.Errorf("the handler's change was applied %d times; want 1", n)
	}

	// A failing handler leaves neither its changes nor a record: the
	// redelivery runs it again.
	boom := errors.New("boom")
	_, err := db.HandleOnce(ctx, "status", "m2", func(ctx context.Context) error {
		if err := setStatus(ctx, "d2", "offline"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v; want the handler's", err)
	}
	if n := count(t, db, `SELECT count(*) FROM hexmill_processed_messages WHERE message_id = 'm2'`); n != 0 {
		t.Errorf("a rolled-back handler left %d dedup records", n)
	}
	if n := count(t, db, `SELECT count(*) FROM devices WHERE id = 'd2'`); n != 0 {
		t.Error("a rolled-back handler left its change")
	}
	if ran, err := db.HandleOnce(ctx, "status", "m2", func(ctx context.Context) error { return setStatus(ctx, "d2", "offline") }); err != nil || !ran {
		t.Fatalf("redelivery after a failure: ran=%v err=%v; want it run", ran, err)
	}

	if _, err := db.HandleOnce(ctx, "status", "", func(context.Context) error { return nil }); !errors.Is(err, postgres.ErrNoMessageID) {
		t.Errorf("empty message ID: err = %v; want ErrNoMessageID", err)
	}
}

// Replicas receiving one message at once: the handler's change is applied
// once, and every delivery returns without error.
func TestHandleOnceConcurrentDuplicates(t *testing.T) {
	db := newDedupDB(t)
	const deliveries = 16
	var wg sync.WaitGroup
	var ran atomic.Int32
	start := make(chan struct{})
	for range deliveries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := db.HandleOnce(context.Background(), "status", "m1", func(ctx context.Context) error { return setStatus(ctx, "d1", "online") })
			if err != nil {
				t.Error(err)
			}
			if r {
				ran.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if ran.Load() != 1 {
		t.Errorf("%d deliveries ran the handler; want 1", ran.Load())
	}
	if n := count(t, db, `SELECT runs FROM devices WHERE id = 'd1'`); n != 1 {
		t.Errorf("the change was applied %d times; want 1", n)
	}
}

func TestDedupMiddleware(t *testing.T) {
	db := newDedupDB(t)
	var calls int
	h := postgres.DedupMiddleware(db, "status")(func(msg *message.Message) ([]*message.Message, error) {
		calls++
		if _, ok := postgres.TxFrom(msg.Context()); !ok {
			return nil, errors.New("no pgx transaction in the message's context")
		}
		return nil, setStatus(msg.Context(), string(msg.Payload), "online")
	})
	for range 3 {
		msg := message.NewMessage("m1", []byte("d1"))
		if _, err := h(msg); err != nil {
			t.Fatal(err)
		}
		if _, ok := ports.TxFrom(msg.Context()); ok {
			t.Fatal("the message's context still carries the finished transaction")
		}
	}
	if calls != 1 {
		t.Errorf("the handler ran %d times for 3 deliveries of one message; want 1", calls)
	}
}

func TestRetention(t *testing.T) {
	db := newDedupDB(t)
	ctx := context.Background()
	for _, id := range []string{"old1", "old2", "new"} {
		if _, err := db.HandleOnce(ctx, "status", id, func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Pool().Exec(ctx, `UPDATE hexmill_processed_messages SET processed_at = now() - interval '2 hours' WHERE message_id LIKE 'old%'`); err != nil {
		t.Fatal(err)
	}
	n, err := db.DeleteProcessedOlderThan(ctx, time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("deleted %d, err %v; want 2", n, err)
	}
	if n := count(t, db, `SELECT count(*) FROM hexmill_processed_messages WHERE message_id = 'new'`); n != 1 {
		t.Error("the recent record was deleted")
	}
	// After its record is gone, a message is handled again.
	if ran, err := db.HandleOnce(ctx, "status", "old1", func(context.Context) error { return nil }); err != nil || !ran {
		t.Errorf("redelivery after retention: ran=%v err=%v; want it run", ran, err)
	}

	// RunRetention cleans at start and then every Every, until cancelled.
	if _, err := db.Pool().Exec(ctx, `UPDATE hexmill_processed_messages SET processed_at = now() - interval '2 hours'`); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		db.RunRetention(rctx, postgres.RetentionConfig{Keep: time.Hour, Every: 10 * time.Millisecond})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for count(t, db, `SELECT count(*) FROM hexmill_processed_messages`) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("RunRetention did not delete the old records in 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}
