package postgres_test

// The relay's Stop on a database or a publisher that stops answering: it
// returns when its context ends, and the rows it could not relay stay.

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/integration"
)

// stopSlack is what a Stop may take beyond its context on a busy machine.
const stopSlack = 5 * time.Second

// The relay's connection goes through a proxy that stalls (the database
// hangs, or the network drops everything) with rows in the outbox.
func TestRelayStopStalledDatabase(t *testing.T) {
	direct := newDB(t, postgres.Config{})
	u, err := url.Parse(integration.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := integration.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	stalled, err := postgres.New(postgres.Config{URL: u.String(), Schema: direct.Schema(), ConnectTimeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	defer proxy.Stall(false) // before Close: pgx's cleanup of the stalled connection ends at once
	s := newSink(t, eventsTopic)
	r := newRelay(t, stalled, s.pubsub, postgres.RelayConfig{PollInterval: time.Hour})
	r.Start()
	commitEvents(t, direct, "d1", 0, 5)
	r.Notify()
	s.take(t, 5, time.Minute) // the relay leads and relays through the proxy
	awaitCount(t, direct, `SELECT count(*) FROM hexmill_outbox`, 0)

	proxy.Stall(true)
	commitEvents(t, direct, "d1", 5, 5)
	const bound = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	err = r.Stop(ctx)
	took := time.Since(start)
	t.Logf("Stop with the database stalled: %s, %v", took.Round(time.Millisecond), err)
	if took > bound+stopSlack {
		t.Fatalf("Stop took %s with the database stalled; want its context's %s", took, bound)
	}
	if n := count(t, direct, `SELECT count(*) FROM hexmill_outbox`); n != 5 {
		t.Errorf("%d rows in the outbox after Stop; want the 5 it could not relay", n)
	}
	// The pool's close waits for pgx to close the relay's interrupted
	// connection, which it does by first asking the (stalled) server to
	// cancel: CloseContext gives up on it when its context ends.
	ctx, cancel = context.WithTimeout(context.Background(), bound)
	defer cancel()
	start = time.Now()
	err = stalled.CloseContext(ctx)
	took = time.Since(start)
	t.Logf("CloseContext with the database stalled: %s, %v", took.Round(time.Millisecond), err)
	if took > bound+stopSlack {
		t.Fatalf("CloseContext took %s with the database stalled; want its context's %s", took, bound)
	}
}

// blockingPublisher never confirms: Publish returns only when the
// message's context ends.
type blockingPublisher struct{ entered chan struct{} }

func (p blockingPublisher) Publish(_ string, msgs ...*message.Message) error {
	select {
	case p.entered <- struct{}{}:
	default:
	}
	<-msgs[0].Context().Done()
	return msgs[0].Context().Err()
}

func (blockingPublisher) Close() error { return nil }

// A publish in flight that never completes (a broker that takes the
// message and never confirms it): Stop returns when its context ends.
func TestRelayStopPublishInFlight(t *testing.T) {
	db := newDB(t, postgres.Config{})
	pub := blockingPublisher{entered: make(chan struct{}, 1)}
	r := newRelay(t, db, pub, postgres.RelayConfig{PollInterval: time.Hour})
	commitEvents(t, db, "d1", 0, 3)
	r.Start()
	select {
	case <-pub.entered:
	case <-time.After(time.Minute):
		t.Fatal("the relay did not publish within a minute")
	}
	const bound = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	err := r.Stop(ctx)
	took := time.Since(start)
	t.Logf("Stop with a publish in flight: %s, %v", took.Round(time.Millisecond), err)
	if took > bound+stopSlack {
		t.Fatalf("Stop took %s with a publish in flight; want its context's %s", took, bound)
	}
	if n := count(t, db, `SELECT count(*) FROM hexmill_outbox`); n != 3 {
		t.Errorf("%d rows in the outbox after Stop; want the 3 never confirmed", n)
	}
}

// awaitCount polls query every 10 ms until it counts want, for a minute at
// most.
func awaitCount(t *testing.T, db *postgres.DB, query string, want int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		n := count(t, db, query)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d after a minute, want %d", query, n, want)
		}
		time.Sleep(10 * time.Millisecond) // polling the database
	}
}
