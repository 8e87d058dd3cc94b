package postgres_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/integration"
)

// A private PostgreSQL killed and restarted while handlers commit state and
// events: Ready fails while it is down and recovers, every message a
// handler acknowledged has its state, and every event arrives.
func TestPostgresRestart(t *testing.T) {
	pg := integration.StartPostgres(t)
	db := newDB(t, postgres.Config{URL: pg.URL(), Schema: "public", ConnectTimeout: 2 * time.Second})
	ctx := context.Background()
	if _, err := db.Pool().Exec(ctx, `CREATE TABLE devices (id text PRIMARY KEY, status text NOT NULL, runs int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, eventsTopic)
	relay := newRelay(t, db, s.pubsub, postgres.RelayConfig{PollInterval: 10 * time.Millisecond, RetryBackoff: 50 * time.Millisecond})
	relay.Start()
	out, err := postgres.NewOutboxPublisher("rabbitmq")
	if err != nil {
		t.Fatal(err)
	}

	const messages = 300
	acked := make(chan int, messages)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		// One handler loop: each message is retried until handled, as the
		// broker would redeliver it.
		defer wg.Done()
		for i := range messages {
			id := strconv.Itoa(i)
			for {
				_, err := db.HandleOnce(ctx, "status", "m"+id, func(ctx context.Context) error {
					if err := setStatus(ctx, "d"+id, "online"); err != nil {
						return err
					}
					msg := message.NewMessage(watermill.NewUUID(), []byte(id))
					msg.Metadata.Set(postgres.MetadataAggregateKey, "d"+id)
					msg.SetContext(ctx)
					return out.Publish(eventsTopic, msg)
				})
				if err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond) // the broker's redelivery backoff
			}
			relay.Notify()
			acked <- i
		}
	}()

	waitAcked := func(n int) {
		t.Helper()
		timeout := time.After(2 * time.Minute)
		for range n {
			select {
			case <-acked:
			case <-timeout:
				t.Fatalf("handlers stalled")
			}
		}
	}
	waitAcked(50)
	pg.Kill()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := db.Ready(rctx); err == nil {
		t.Error("Ready returned nil with PostgreSQL down")
	}
	cancel()
	pg.Start()
	deadline := time.Now().Add(time.Minute)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := db.Ready(rctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready still fails a minute after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitAcked(messages - 50)
	wg.Wait()

	// Read every event, duplicates too (a publish confirmed just before
	// the kill, whose row could not be deleted, comes again).
	received := map[string]int{}
	timeout := time.After(time.Minute)
	for len(received) < messages {
		select {
		case m := <-s.msgs:
			m.Ack()
			received[string(m.Payload)]++
		case <-timeout:
			t.Fatalf("%d of %d events arrived", len(received), messages)
		}
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		stop(t, relay)
	}()
	duplicates := 0
	for done := false; !done; {
		select {
		case m := <-s.msgs:
			m.Ack()
			received[string(m.Payload)]++
		case <-stopped:
			done = true
		}
	}
	for i := range messages {
		n := received[strconv.Itoa(i)]
		if n == 0 {
			t.Errorf("event %d never arrived", i)
		}
		duplicates += max(n-1, 0)
	}
	t.Logf("%d events, %d duplicates (published, then the kill before the row was deleted)", messages, duplicates)
	if n := count(t, db, `SELECT count(*) FROM devices`); n != messages {
		t.Errorf("%d devices stored; want %d", n, messages)
	}
	if n := count(t, db, `SELECT count(*) FROM devices WHERE runs <> 1`); n != 0 {
		t.Errorf("%d devices changed more than once", n)
	}
}
