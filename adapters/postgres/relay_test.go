package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/postgres"
)

const eventsTopic = "device-status"

// commitEvents commits events seq 0..n-1 of aggregate agg, each in its own
// transaction through the OutboxPublisher, as handlers would.
func commitEvents(t testing.TB, db *postgres.DB, agg string, from, n int) {
	t.Helper()
	out, err := postgres.NewOutboxPublisher("rabbitmq")
	if err != nil {
		t.Error(err)
		return
	}
	for seq := from; seq < from+n; seq++ {
		err := db.InTx(context.Background(), func(ctx context.Context) error {
			msg := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(seq)))
			msg.Metadata.Set(postgres.MetadataAggregateKey, agg)
			msg.SetContext(ctx)
			return out.Publish(eventsTopic, msg)
		})
		if err != nil {
			t.Errorf("commit %s/%d: %v", agg, seq, err)
			return
		}
	}
}

// checkOrder checks that msgs hold, for every aggregate, exactly the
// sequence numbers want[agg] given, in order.
func checkOrder(t testing.TB, msgs []*message.Message, want map[string][]int) {
	t.Helper()
	got := map[string][]int{}
	for _, m := range msgs {
		seq, err := strconv.Atoi(string(m.Payload))
		if err != nil {
			t.Fatalf("payload %q", m.Payload)
		}
		agg := m.Metadata.Get(postgres.MetadataAggregateKey)
		got[agg] = append(got[agg], seq)
	}
	for agg, w := range want {
		if fmt.Sprint(got[agg]) != fmt.Sprint(w) {
			t.Errorf("aggregate %s: got %v; want %v", agg, got[agg], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d aggregates; want %d", len(got), len(want))
	}
}

func seqs(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func newRelay(t testing.TB, db *postgres.DB, pub message.Publisher, cfg postgres.RelayConfig) *postgres.Relay {
	t.Helper()
	cfg.Publishers = map[string]message.Publisher{"rabbitmq": pub}
	r, err := postgres.NewRelay(db, cfg, watermill.NewStdLogger(false, false))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func stop(t testing.TB, r *postgres.Relay) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Error(err)
	}
}

// Handlers commit events for many aggregates at once while two relays (two
// replicas) run: every event is published once, each aggregate's in order.
func TestRelayOrderPerAggregate(t *testing.T) {
	db := newDB(t, postgres.Config{})
	s := newSink(t, eventsTopic)
	const aggregates, perAggregate = 20, 50
	r1 := newRelay(t, db, s.pubsub, postgres.RelayConfig{PollInterval: 5 * time.Millisecond})
	r2 := newRelay(t, db, s.pubsub, postgres.RelayConfig{PollInterval: 5 * time.Millisecond})
	r1.Start()
	r2.Start()
	var wg sync.WaitGroup
	want := map[string][]int{}
	for a := range aggregates {
		agg := "device-" + strconv.Itoa(a)
		want[agg] = seqs(0, perAggregate)
		wg.Add(1)
		go func() {
			defer wg.Done()
			commitEvents(t, db, agg, 0, perAggregate)
		}()
	}
	wg.Wait()
	got := s.take(t, aggregates*perAggregate, time.Minute)
	stop(t, r1)
	stop(t, r2)
	checkOrder(t, got, want)
	select {
	case m := <-s.msgs:
		t.Errorf("a duplicate: %s %s", m.Metadata.Get(postgres.MetadataAggregateKey), m.Payload)
	default:
	}
	if n := count(t, db, `SELECT count(*) FROM hexmill_outbox`); n != 0 {
		t.Errorf("%d rows left in the outbox", n)
	}
}

// A publisher that fails now and then: nothing is skipped or reordered.
func TestRelayPublisherFailures(t *testing.T) {
	db := newDB(t, postgres.Config{})
	s := newSink(t, eventsTopic)
	want := map[string][]int{}
	for a := range 5 {
		agg := "device-" + strconv.Itoa(a)
		commitEvents(t, db, agg, 0, 20)
		want[agg] = seqs(0, 20)
	}
	flaky := &flakyPublisher{Publisher: s.pubsub, failEvery: 3}
	r := newRelay(t, db, flaky, postgres.RelayConfig{RetryBackoff: time.Millisecond, BatchSize: 7})
	r.Start()
	got := s.take(t, 100, time.Minute)
	stop(t, r)
	checkOrder(t, got, want)
	if flaky.failures < 30 {
		t.Errorf("%d publish failures injected; want at least 30", flaky.failures)
	}
	if n := count(t, db, `SELECT count(*) FROM hexmill_outbox`); n != 0 {
		t.Errorf("%d rows left in the outbox", n)
	}
}

// failAfter passes n publishes on and then fails every one.
type failAfter struct {
	message.Publisher
	mu sync.Mutex
	n  int
}

func (p *failAfter) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == 0 {
		return errors.New("broker gone")
	}
	p.n--
	return p.Publisher.Publish(topic, msgs...)
}

// Events committed but not relayed when a relay stops (its broker gone)
// are relayed by the next relay to start, in order.
func TestRelayResumesAfterRestart(t *testing.T) {
	db := newDB(t, postgres.Config{})
	s := newSink(t, eventsTopic)
	commitEvents(t, db, "d1", 0, 100)

	r1 := newRelay(t, db, &failAfter{Publisher: s.pubsub, n: 30}, postgres.RelayConfig{RetryBackoff: time.Millisecond})
	r1.Start()
	first := s.take(t, 30, time.Minute)
	stop(t, r1)
	if n := count(t, db, `SELECT count(*) FROM hexmill_outbox`); n != 70 {
		t.Fatalf("%d rows in the outbox after the first relay; want 70", n)
	}

	r2 := newRelay(t, db, s.pubsub, postgres.RelayConfig{})
	r2.Start()
	rest := s.take(t, 70, time.Minute)
	stop(t, r2)
	checkOrder(t, append(first, rest...), map[string][]int{"d1": seqs(0, 100)})
}

// Stop relays what the handlers committed before it, before returning:
// the publishers close after it.
func TestRelayStopDrains(t *testing.T) {
	db := newDB(t, postgres.Config{})
	s := newSink(t, eventsTopic)
	commitEvents(t, db, "d1", 0, 10)
	r := newRelay(t, db, s.pubsub, postgres.RelayConfig{PollInterval: time.Hour, BatchSize: 3})
	r.Start()
	first := s.take(t, 10, time.Minute) // the first rounds run at start
	commitEvents(t, db, "d1", 10, 250)  // nobody calls Notify: only Stop relays these
	if n := count(t, db, `SELECT count(*) FROM hexmill_outbox`); n != 250 {
		t.Fatalf("%d rows in the outbox before Stop; want 250", n)
	}
	taken := make(chan []*message.Message)
	go func() { taken <- s.take(t, 250, time.Minute) }()
	stop(t, r)
	if n := count(t, db, `SELECT count(*) FROM hexmill_outbox`); n != 0 {
		t.Fatalf("Stop left %d rows in the outbox", n)
	}
	rest := <-taken
	checkOrder(t, append(first, rest...), map[string][]int{"d1": seqs(0, 260)})
}

func TestOutboxPublisherNeedsATransaction(t *testing.T) {
	out, err := postgres.NewOutboxPublisher("rabbitmq")
	if err != nil {
		t.Fatal(err)
	}
	err = out.Publish(eventsTopic, message.NewMessage("m1", []byte("x")))
	if !errors.Is(err, postgres.ErrNoTx) {
		t.Errorf("err = %v; want ErrNoTx", err)
	}
}
