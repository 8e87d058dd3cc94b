package postgres_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/postgres"
)

// delivered records what a store's poller delivers, and when.
type delivered struct {
	mu   sync.Mutex
	msgs []*message.Message
	at   []time.Time
	got  chan struct{}
}

func newDelivered() *delivered { return &delivered{got: make(chan struct{}, 1000)} }

func (d *delivered) fn(msg *message.Message) error {
	d.mu.Lock()
	d.msgs = append(d.msgs, msg)
	d.at = append(d.at, time.Now())
	d.mu.Unlock()
	d.got <- struct{}{}
	return nil
}

// await waits for n deliveries, bounded generously.
func (d *delivered) await(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for range n {
		select {
		case <-d.got:
		case <-deadline:
			t.Fatalf("not %d deliveries within 30s", n)
		}
	}
}

func newStore(t *testing.T, db *postgres.DB, cfg postgres.DelayStoreConfig) *postgres.DelayStore {
	t.Helper()
	s, err := postgres.NewDelayStore(db, cfg, watermill.NewStdLogger(false, false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
	})
	return s
}

func park(t *testing.T, s *postgres.DelayStore, handler, id string, delay time.Duration, md map[string]string) {
	t.Helper()
	msg := message.NewMessage(id, []byte("payload "+id))
	for k, v := range md {
		msg.Metadata.Set(k, v)
	}
	if err := s.Park(context.Background(), handler, delay, msg); err != nil {
		t.Fatal(err)
	}
}

// A parked message comes back to its own handler's function, not before
// its delay, with its ID, metadata and payload, and its row is deleted.
func TestDelayStoreDeliversWhenDue(t *testing.T) {
	db := newDB(t, postgres.Config{})
	a, b := newDelivered(), newDelivered()
	s := newStore(t, db, postgres.DelayStoreConfig{PollInterval: 50 * time.Millisecond,
		Handlers: map[string]func(*message.Message) error{"a": a.fn, "b": b.fn}})
	s.Start()
	const delay = 700 * time.Millisecond
	start := time.Now()
	park(t, s, "a", "m1", delay, map[string]string{"delivery_attempt": "2", "k": "v"})
	park(t, s, "b", "m2", 0, nil)
	park(t, s, "other", "m3", 0, nil) // no poller for it here
	b.await(t, 1)
	a.await(t, 1)
	if took := a.at[0].Sub(start); took < delay {
		t.Errorf("delivered after %s; want not before the delay %s", took, delay)
	}
	m := a.msgs[0]
	if m.UUID != "m1" || string(m.Payload) != "payload m1" || m.Metadata.Get("delivery_attempt") != "2" || m.Metadata.Get("k") != "v" {
		t.Errorf("delivered %s %q %v; want m1 with its payload and metadata", m.UUID, m.Payload, m.Metadata)
	}
	if b.msgs[0].UUID != "m2" {
		t.Errorf("handler b got %s; want m2", b.msgs[0].UUID)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM hexmill_delayed_messages`); n != 1 {
		t.Errorf("%d rows left; want 1 (handler other's)", n)
	}
}

// A delivery that fails keeps its row; it is delivered again after the
// retry backoff, and deleted once it succeeds.
func TestDelayStoreRedeliversAFailure(t *testing.T) {
	db := newDB(t, postgres.Config{})
	var calls atomic.Int32
	done := make(chan struct{})
	s := newStore(t, db, postgres.DelayStoreConfig{PollInterval: 20 * time.Millisecond, RetryBackoff: 100 * time.Millisecond,
		Handlers: map[string]func(*message.Message) error{"h": func(*message.Message) error {
			if calls.Add(1) < 3 {
				return errors.New("not yet")
			}
			close(done)
			return nil
		}}})
	s.Start()
	park(t, s, "h", "m", 0, nil)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("delivered %d times in 30s; want success on the 3rd", calls.Load())
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM hexmill_delayed_messages`); n != 0 {
		t.Errorf("%d rows left; want 0", n)
	}
}

// Two pollers (two replicas) share the due rows: each message is
// delivered once.
func TestDelayStoreSharedByReplicas(t *testing.T) {
	db := newDB(t, postgres.Config{})
	d := newDelivered()
	cfg := postgres.DelayStoreConfig{PollInterval: 20 * time.Millisecond, BatchSize: 7,
		Handlers: map[string]func(*message.Message) error{"h": d.fn}}
	s1, s2 := newStore(t, db, cfg), newStore(t, db, cfg)
	const n = 200
	for i := range n {
		park(t, s1, "h", watermill.NewUUID(), time.Duration(i%5)*time.Millisecond, map[string]string{"i": string(rune('a' + i%26))})
	}
	s1.Start()
	s2.Start()
	d.await(t, n)
	for _, s := range []*postgres.DelayStore{s1, s2} {
		if err := s.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, m := range d.msgs {
		if seen[m.UUID] {
			t.Errorf("message %s delivered twice", m.UUID)
		}
		seen[m.UUID] = true
	}
	if len(d.msgs) != n {
		t.Errorf("delivered %d; want %d", len(d.msgs), n)
	}
}

// A process that dies with a claim (its lease held) delays the message
// by the lease: another poller delivers it then.
func TestDelayStoreLeaseExpires(t *testing.T) {
	db := newDB(t, postgres.Config{})
	block := make(chan struct{})
	first := make(chan struct{})
	s1 := newStore(t, db, postgres.DelayStoreConfig{PollInterval: 20 * time.Millisecond, Lease: 500 * time.Millisecond,
		Handlers: map[string]func(*message.Message) error{"h": func(msg *message.Message) error {
			close(first)
			select { // a hung delivery: its context ends when Stop gives up
			case <-block:
			case <-msg.Context().Done():
			}
			return errors.New("died")
		}}})
	park(t, s1, "h", "m", 0, nil)
	s1.Start()
	<-first
	d := newDelivered()
	s2 := newStore(t, db, postgres.DelayStoreConfig{PollInterval: 20 * time.Millisecond,
		Handlers: map[string]func(*message.Message) error{"h": d.fn}})
	claimed := time.Now()
	s2.Start()
	d.await(t, 1)
	if took := time.Since(claimed); took < 400*time.Millisecond {
		t.Errorf("delivered again after %s; want after the 500ms lease", took)
	}
	close(block)
}

// Stop ends by its context even while a delivery hangs.
func TestDelayStoreStopBounded(t *testing.T) {
	db := newDB(t, postgres.Config{})
	started := make(chan struct{})
	s := newStore(t, db, postgres.DelayStoreConfig{PollInterval: 20 * time.Millisecond,
		Handlers: map[string]func(*message.Message) error{"h": func(msg *message.Message) error {
			close(started)
			<-msg.Context().Done()
			return msg.Context().Err()
		}}})
	park(t, s, "h", "m", 0, nil)
	s.Start()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	if err := s.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v; want the context's deadline", err)
	}
	if took := time.Since(begin); took > 10*time.Second {
		t.Errorf("Stop took %s", took)
	}
	if n := count(t, db, `SELECT count(*) FROM hexmill_delayed_messages`); n != 1 {
		t.Errorf("%d rows; want the undelivered one kept", n)
	}
}
