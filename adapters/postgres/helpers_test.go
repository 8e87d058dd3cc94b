package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/integration"
)

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// testSchema is a schema name of the test's own, so that tests and
// packages running at once on one database do not collide.
func testSchema(t testing.TB) string {
	name := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	return fmt.Sprintf("t_%s_%08x", name, rand.Uint32())
}

// newDB opens a DB on the test database in a fresh schema with the
// framework's tables; the schema is dropped when the test ends.
func newDB(t testing.TB, cfg postgres.Config) *postgres.DB {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = integration.PostgresURL(t)
	}
	if cfg.Schema == "" {
		cfg.Schema = testSchema(t)
		t.Cleanup(func() { dropSchema(t, cfg) })
	}
	db, err := postgres.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := db.Migrate(ctx, postgres.FrameworkComponent, postgres.Migrations()); err != nil {
		t.Fatal(err)
	}
	return db
}

func dropSchema(t testing.TB, cfg postgres.Config) {
	db, err := postgres.New(postgres.Config{URL: cfg.URL, Schema: "public"}, nil)
	if err != nil {
		t.Error(err)
		return
	}
	defer db.Close()
	if _, err := db.Pool().Exec(context.Background(), `DROP SCHEMA IF EXISTS "`+cfg.Schema+`" CASCADE`); err != nil {
		t.Logf("drop schema %s: %v", cfg.Schema, err)
	}
}

func count(t testing.TB, db *postgres.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Pool().QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// sink is a real watermill pub/sub (gochannel; Publish returns once the
// subscriber acked, which keeps the order) the relay publishes to, and
// the messages a test reads back from it in arrival order.
type sink struct {
	pubsub *gochannel.GoChannel
	msgs   <-chan *message.Message
}

func newSink(t testing.TB, topic string) *sink {
	t.Helper()
	ps := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 100000, Persistent: true, BlockPublishUntilSubscriberAck: true}, nil)
	t.Cleanup(func() { _ = ps.Close() })
	msgs, err := ps.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	return &sink{pubsub: ps, msgs: msgs}
}

// take returns the next n messages, failing the test if they do not come
// within timeout.
func (s *sink) take(t testing.TB, n int, timeout time.Duration) []*message.Message {
	t.Helper()
	deadline := time.After(timeout)
	var got []*message.Message
	for len(got) < n {
		select {
		case m := <-s.msgs:
			m.Ack()
			got = append(got, m)
		case <-deadline:
			t.Errorf("got %d of %d messages in %s", len(got), n, timeout)
			return got
		}
	}
	return got
}

// flakyPublisher fails every failEvery-th Publish call (from the first
// call on when failEvery is 1) and passes the others on.
type flakyPublisher struct {
	message.Publisher
	calls, failEvery int
	failures         int
}

func (p *flakyPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.calls++
	if p.failEvery > 0 && p.calls%p.failEvery == 0 {
		p.failures++
		return fmt.Errorf("injected failure %d", p.failures)
	}
	return p.Publisher.Publish(topic, msgs...)
}
