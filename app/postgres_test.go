package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/ports"
)

// The PostgreSQL wiring through the whole fx graph, against a real
// PostgreSQL (HEXMILL_TEST_POSTGRES_URL, else a container), each test in
// a schema of its own; the transport is the in-memory one.

const pgName = "pgtest"

// itemChanged is the event the test handlers publish; it belongs to the
// item it names.
type itemChanged struct {
	Item string `json:"item"`
}

func (itemChanged) EventType() string     { return "ItemChanged" }
func (e itemChanged) AggregateID() string { return e.Item }

// itemMigrations is the test service's own table, applied with
// app.AsMigrations after the framework's.
var itemMigrations = fstest.MapFS{
	"0001_items.sql": {Data: []byte(`CREATE TABLE items (id text PRIMARY KEY, n int NOT NULL)`)},
}

// handleFunc is a test handler with what a real one would get.
type handleFunc func(ctx context.Context, pub ports.Publisher, db *postgres.DB, msg ports.Message) error

// storeAndPublish counts the item named by the payload in the handler's
// transaction and publishes ItemChanged in it.
func storeAndPublish(ctx context.Context, pub ports.Publisher, _ *postgres.DB, msg ports.Message) error {
	tx, ok := ports.TxFrom(ctx)
	if !ok {
		return errors.New("no transaction in the handler's context")
	}
	item := string(msg.Payload)
	if _, err := tx.Exec(ctx, `INSERT INTO items (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = items.n + 1`, item); err != nil {
		return err
	}
	return pub.Publish(ctx, itemChanged{Item: item})
}

// pgEnv is the environment of a test service on PostgreSQL in a new
// schema, dropped when the test ends; idempotent makes handler "test"
// idempotent.
func pgEnv(t *testing.T, pgURL string, idempotent bool) (app.Env, string) {
	t.Helper()
	schema := pgSchema(t)
	t.Cleanup(func() { dropPGSchema(t, schema) })
	e := app.Env{
		"PGTEST_HTTP_ADDR":       "off",
		"PGTEST_POSTGRES_URL":    pgURL,
		"PGTEST_POSTGRES_SCHEMA": schema,
	}
	if idempotent {
		e["PGTEST_HANDLERS_TEST_IDEMPOTENT"] = "true"
	}
	return e, schema
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

func pgSchema(t *testing.T) string {
	name := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	return fmt.Sprintf("t_%s_%08x", name, rand.Uint32())
}

func dropPGSchema(t *testing.T, schema string) {
	db := openDB(t, "public")
	if _, err := db.Pool().Exec(context.Background(), `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`); err != nil {
		t.Logf("drop schema %s: %v", schema, err)
	}
	_ = db.Close()
}

// openDB opens the test database on schema, for the test's own queries;
// closed when the test ends.
func openDB(t *testing.T, schema string) *postgres.DB {
	t.Helper()
	db, err := postgres.New(postgres.Config{URL: integration.PostgresURL(t), Schema: schema}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func countRows(t *testing.T, db *postgres.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Pool().QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// pgService is handler "test" on the memory topic in, ItemChanged on out
// (on transport events, memory unless a test replaces it), the poison
// target on memory.
func pgService(handle handleFunc, options ...fx.Option) app.Service {
	return app.Service{
		Name: pgName,
		Defaults: func(c *config.Config) {
			c.DrainTimeout = 5 * time.Second
			c.Retry = config.RetryConfig{MaxRetries: 2, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, Multiplier: 2}
			c.Handlers["test"] = config.Binding{Transport: config.TransportMemory, Topic: inTopic, Group: group, Concurrency: 8}
			c.Events["ItemChanged"] = config.EventBinding{Transport: config.TransportMemory, Topic: outTopic}
			c.Poison = config.EventBinding{Transport: config.TransportMemory, Topic: poisonTopic}
		},
		Options: append([]fx.Option{
			app.AsMigrations("items", itemMigrations),
			app.AsHandler(func(pub ports.Publisher, db *postgres.DB) ports.Handler {
				return ports.HandlerFunc{HandlerName: "test", Func: func(ctx context.Context, msg ports.Message) error {
					return handle(ctx, pub, db, msg)
				}}
			}),
		}, options...),
	}
}

// started is a running test service.
type started struct {
	app     *fx.App
	broker  *memory.Transport
	ops     *app.OpsServer
	stopped bool
}

func startService(t *testing.T, svc app.Service, e app.Env) *started {
	t.Helper()
	s := &started{}
	s.app = app.New(svc, e, fx.Populate(&s.broker, &s.ops), fx.NopLogger)
	if err := s.app.Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.app.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *started) stop(t *testing.T) {
	t.Helper()
	if s.stopped {
		return
	}
	s.stopped = true
	if err := s.app.Stop(context.Background()); err != nil {
		t.Error(err)
	}
}

// A message delivered twice (the same ID: a broker's redelivery) is
// handled once, and both deliveries are acknowledged.
func TestIdempotentDuplicateHandledOnce(t *testing.T) {
	e, schema := pgEnv(t, integration.PostgresURL(t), true)
	var runs atomic.Int32
	s := startService(t, pgService(func(ctx context.Context, pub ports.Publisher, db *postgres.DB, msg ports.Message) error {
		runs.Add(1)
		return storeAndPublish(ctx, pub, db, msg)
	}), e)

	const copies = 5
	for range copies {
		publish(t, s.broker, inTopic, "dup-1", "a")
	}
	publish(t, s.broker, inTopic, "other", "b")
	waitFor(t, "both messages handled and none waiting", func() bool {
		return runs.Load() == 2 && s.broker.Depth(inTopic, group) == 0
	})
	// Stop settles what is in flight: a delivery that were not acked
	// would be back in the queue.
	s.stop(t)

	db := openDB(t, schema)
	if n := s.broker.Depth(inTopic, group); n != 0 {
		t.Errorf("%d deliveries went back to the queue; want every copy acked", n)
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("the handler ran %d times for 2 distinct messages", n)
	}
	if n := countRows(t, db, `SELECT n FROM items WHERE id = 'a'`); n != 1 {
		t.Errorf("item a counted %d times; want 1", n)
	}
	if n := countRows(t, db, `SELECT count(*) FROM hexmill_processed_messages WHERE handler = 'test'`); n != 2 {
		t.Errorf("%d processed-message records; want 2", n)
	}
	if n := s.broker.Depth(outTopic, "reader"); n != 2 {
		t.Errorf("%d events published; want 2, one per distinct message", n)
	}
}

// With message_id content, a message its sender gave no ID (each delivery
// a new UUID, as from an MQTT device) is handled once however often it is
// delivered; another payload is another message.
func TestIdempotentByContent(t *testing.T) {
	e, schema := pgEnv(t, integration.PostgresURL(t), true)
	e["PGTEST_HANDLERS_TEST_MESSAGE_ID"] = "content"
	var runs atomic.Int32
	s := startService(t, pgService(func(ctx context.Context, pub ports.Publisher, db *postgres.DB, msg ports.Message) error {
		runs.Add(1)
		return storeAndPublish(ctx, pub, db, msg)
	}), e)

	for i := range 3 {
		publish(t, s.broker, inTopic, fmt.Sprintf("delivery-%d", i), "same")
	}
	publish(t, s.broker, inTopic, "delivery-3", "other")
	waitFor(t, "every delivery settled", func() bool {
		return s.broker.Depth(outTopic, "reader") == 2 && s.broker.Depth(inTopic, group) == 0
	})
	s.stop(t)
	if n := runs.Load(); n != 2 {
		t.Errorf("the handler ran %d times for 2 distinct payloads", n)
	}
	db := openDB(t, schema)
	if n := countRows(t, db, `SELECT n FROM items WHERE id = 'same'`); n != 1 {
		t.Errorf("the repeated payload was counted %d times; want 1", n)
	}
	if n := s.broker.Depth(outTopic, "reader"); n != 2 {
		t.Errorf("%d events; want 2", n)
	}
}

// An event published while handling goes through the outbox: nothing is
// on the transport before the handler's transaction commits, and once
// after, with the metadata the direct path sets.
func TestOutboxEventArrivesOnceAfterCommit(t *testing.T) {
	e, schema := pgEnv(t, integration.PostgresURL(t), true)
	published, release := make(chan struct{}), make(chan struct{})
	var released sync.Once
	unblock := func() { released.Do(func() { close(release) }) }
	s := startService(t, pgService(func(ctx context.Context, pub ports.Publisher, db *postgres.DB, msg ports.Message) error {
		if err := storeAndPublish(ctx, pub, db, msg); err != nil {
			return err
		}
		close(published)
		<-release // the transaction is open until the handler returns
		return nil
	}), e)
	t.Cleanup(unblock) // a failed test does not leave the handler blocked at stop
	db := openDB(t, schema)

	in := message.NewMessage("in-1", []byte("device-7"))
	in.Metadata.Set(ports.MetadataCorrelationID, "corr-1")
	if err := s.broker.Publish(inTopic, in); err != nil {
		t.Fatal(err)
	}
	select {
	case <-published:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not publish")
	}
	// Published, not committed: a direct publish would be on the topic
	// now; an uncommitted outbox row is invisible to the relay.
	if n := s.broker.Depth(outTopic, "reader"); n != 0 {
		t.Fatalf("%d events on the transport before the commit", n)
	}
	if n := countRows(t, db, `SELECT count(*) FROM hexmill_outbox`); n != 0 {
		t.Fatalf("%d outbox rows visible before the commit", n)
	}
	unblock()
	waitFor(t, "the event on the transport", func() bool { return s.broker.Depth(outTopic, "reader") >= 1 })
	s.stop(t)

	if n := s.broker.Depth(outTopic, "reader"); n != 1 {
		t.Errorf("%d events on the transport; want exactly 1", n)
	}
	if n := countRows(t, db, `SELECT count(*) FROM hexmill_outbox`); n != 0 {
		t.Errorf("%d outbox rows left after the relay published", n)
	}
	if n := countRows(t, db, `SELECT n FROM items WHERE id = 'device-7'`); n != 1 {
		t.Errorf("item count %d; want 1", n)
	}
	got := receive(t, s.broker, outTopic, 1)[0]
	if string(got.Payload) != `{"item":"device-7"}` {
		t.Errorf("payload %s", got.Payload)
	}
	for k, want := range map[string]string{
		ports.MetadataEventType:       "ItemChanged",
		ports.MetadataCorrelationID:   "corr-1",
		postgres.MetadataAggregateKey: "device-7",
	} {
		if v := got.Metadata.Get(k); v != want {
			t.Errorf("metadata %s = %q, want %q", k, v, want)
		}
	}
	if got.UUID == "" || got.UUID == in.UUID {
		t.Errorf("event UUID %q; want a new one", got.UUID)
	}
}

// A handler that fails (an error or a panic) leaves nothing: no state, no
// record, no event; each attempt is a transaction of its own, and the
// message is poisoned directly (a rolled-back transaction cannot lose it).
func TestIdempotentHandlerErrorRollsBack(t *testing.T) {
	for _, tt := range []struct {
		name   string
		fail   func() error
		reason string
	}{
		{"error", func() error { return errors.New("the handler fails after its changes") }, "fails after its changes"},
		{"panic", func() error { panic("the handler panics after its changes") }, "panics after its changes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, schema := pgEnv(t, integration.PostgresURL(t), true)
			var attempts atomic.Int32
			s := startService(t, pgService(func(ctx context.Context, pub ports.Publisher, db *postgres.DB, msg ports.Message) error {
				attempts.Add(1)
				if err := storeAndPublish(ctx, pub, db, msg); err != nil {
					return err // e.g. a second attempt in the same transaction
				}
				return tt.fail()
			}), e)

			publish(t, s.broker, inTopic, "fails-1", "x")
			poisoned := receive(t, s.broker, poisonTopic, 1)[0]
			s.stop(t)

			db := openDB(t, schema)
			if poisoned.UUID != "fails-1" || !strings.Contains(poisoned.Metadata.Get("reason_poisoned"), tt.reason) {
				t.Errorf("poisoned %s with reason %q", poisoned.UUID, poisoned.Metadata.Get("reason_poisoned"))
			}
			if n := attempts.Load(); n != 3 {
				t.Errorf("%d attempts; want 3 (max_retries 2), each failing after its changes", n)
			}
			for what, query := range map[string]string{
				"items":                     `SELECT count(*) FROM items`,
				"processed-message records": `SELECT count(*) FROM hexmill_processed_messages`,
				"outbox rows":               `SELECT count(*) FROM hexmill_outbox`,
			} {
				if n := countRows(t, db, query); n != 0 {
					t.Errorf("%d %s after a failed handler; want 0", n, what)
				}
			}
			if n := s.broker.Depth(outTopic, "reader"); n != 0 {
				t.Errorf("%d events published by a failed handler", n)
			}
			if n := s.broker.Depth(inTopic, group); n != 0 {
				t.Errorf("the poisoned message went back to its queue (%d)", n)
			}
		})
	}
}

// Stop relays what the outbox holds through the publishers before they
// close. The events are committed by the service's own transaction (InTx,
// no idempotent binding) while the test holds the relay's lock, so that
// they are all in the outbox when stop begins.
func TestStopDrainsOutboxBeforePublishersClose(t *testing.T) {
	e, schema := pgEnv(t, integration.PostgresURL(t), false)
	e["PGTEST_POSTGRES_RELAY_POLL_INTERVAL"] = "1h"
	e["PGTEST_EVENTS_ITEMCHANGED_TRANSPORT"] = "closing"
	var handled atomic.Int32
	closing := &closingTransport{}
	svc := pgService(func(ctx context.Context, pub ports.Publisher, db *postgres.DB, msg ports.Message) error {
		err := db.InTx(ctx, func(ctx context.Context) error { return storeAndPublish(ctx, pub, db, msg) })
		if err == nil {
			handled.Add(1)
		}
		return err
	}, closing.option())

	// The test's connection holds the relay's lock: the service's relay
	// stands by and publishes nothing until stop.
	db := openDB(t, schema)
	lock, err := db.Pool().Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	if _, err := lock.Exec(context.Background(), `SELECT pg_advisory_lock(hashtext($1))`, "hexmill.outbox."+schema); err != nil {
		t.Fatal(err)
	}

	s := startService(t, svc, e)
	closing.broker = s.broker
	const n = 20
	for i := range n {
		publish(t, s.broker, inTopic, fmt.Sprintf("m-%d", i), fmt.Sprintf("item-%d", i))
	}
	waitFor(t, "every message handled", func() bool { return handled.Load() == n })
	if got := countRows(t, db, `SELECT count(*) FROM hexmill_outbox`); got != n {
		t.Fatalf("%d outbox rows; want %d", got, n)
	}
	if got := s.broker.Depth(outTopic, "reader"); got != 0 {
		t.Fatalf("%d events published while the relay stood by", got)
	}
	if _, err := lock.Exec(context.Background(), `SELECT pg_advisory_unlock(hashtext($1))`, "hexmill.outbox."+schema); err != nil {
		t.Fatal(err)
	}
	s.stop(t)

	if got := s.broker.Depth(outTopic, "reader"); got != n {
		t.Errorf("%d events published by stop; want %d", got, n)
	}
	if got := countRows(t, db, `SELECT count(*) FROM hexmill_outbox`); got != 0 {
		t.Errorf("%d outbox rows left after stop", got)
	}
	if after := closing.publishedAfterClose.Load(); after != 0 {
		t.Errorf("%d publishes after the publisher closed", after)
	}
	if !closing.closed.Load() {
		t.Error("the event publisher was not closed")
	}
}

// closingTransport is a transport named "closing" that publishes to the
// memory broker and refuses to publish once its publisher closed.
type closingTransport struct {
	broker              *memory.Transport
	closed              atomic.Bool
	publishedAfterClose atomic.Int32
}

type closingConfig struct{}

func (c *closingTransport) option() fx.Option {
	return app.AsTransport("closing", func() closingConfig { return closingConfig{} },
		func(closingConfig, app.TransportEnv) (transport.Transport, error) { return c, nil })
}

func (c *closingTransport) Open(context.Context) error { return nil }
func (c *closingTransport) Publisher(map[string]string) (message.Publisher, error) {
	return closingPublisher{c}, nil
}
func (c *closingTransport) Subscriber(transport.SubscriberConfig) (message.Subscriber, error) {
	return nil, errors.New("closing: publish-only")
}
func (c *closingTransport) Ready() error { return nil }
func (c *closingTransport) Close() error { return nil }

type closingPublisher struct{ t *closingTransport }

func (p closingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if p.t.closed.Load() {
		p.t.publishedAfterClose.Add(1)
		return errors.New("publisher closed")
	}
	return p.t.broker.Publish(topic, msgs...)
}

func (p closingPublisher) Close() error {
	p.t.closed.Store(true)
	return nil
}

// proxiedPG is the test database's URL through a TCP proxy of the test's
// own, for cutting the connections.
func proxiedPG(t *testing.T) (string, *integration.Proxy) {
	t.Helper()
	u, err := url.Parse(integration.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := integration.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	return u.String(), proxy
}

// /readyz follows the database: it fails while PostgreSQL cannot be
// reached and recovers when it can.
func TestReadinessFollowsDatabase(t *testing.T) {
	pgURL, proxy := proxiedPG(t)
	e, _ := pgEnv(t, pgURL, true)
	e["PGTEST_HTTP_ADDR"] = "127.0.0.1:0"
	s := startService(t, pgService(storeAndPublish), e)

	readyz := func() (int, string) {
		resp, err := http.Get("http://" + s.ops.Addr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := readyz(); code != http.StatusOK {
		t.Fatalf("/readyz = %d %s with the database up", code, body)
	}

	proxy.Refuse(true)
	proxy.Cut()
	var body string
	waitFor(t, "/readyz to fail", func() bool {
		var code int
		code, body = readyz()
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "postgres") {
		t.Errorf("/readyz says %q; want the database named", body)
	}

	proxy.Refuse(false)
	waitFor(t, "/readyz to recover", func() bool {
		code, _ := readyz()
		return code == http.StatusOK
	})
}

// A message whose handler finds the database unreachable is handed back to
// its broker, whatever the retries: never poisoned (it is not at fault). It
// is handled once the database is back.
func TestDatabaseOutageHandsBackNotPoisons(t *testing.T) {
	pgURL, proxy := proxiedPG(t)
	e, schema := pgEnv(t, pgURL, true)
	e["PGTEST_HTTP_ADDR"] = "127.0.0.1:0"
	s := startService(t, pgService(storeAndPublish), e)
	handedBack := func() float64 {
		resp, err := http.Get("http://" + s.ops.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "pgtest_messages_handed_back_total{") && strings.Contains(l, `reason="database_unavailable"`) {
				n, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
				if err != nil {
					t.Fatalf("metric line %q: %v", l, err)
				}
				return n
			}
		}
		return 0
	}

	proxy.Refuse(true)
	proxy.Cut()
	publish(t, s.broker, inTopic, "outage-1", "during-outage")
	// The retries (2, ms apart) are spent many times over by now.
	waitFor(t, "the message handed back twice for the database", func() bool { return handedBack() >= 2 })
	if n := s.broker.Depth(poisonTopic, "reader"); n != 0 {
		t.Fatalf("%d messages poisoned while the database was down; want 0", n)
	}

	proxy.Refuse(false)
	waitFor(t, "the event after the database is back", func() bool { return s.broker.Depth(outTopic, "reader") == 1 })
	s.stop(t)
	db := openDB(t, schema)
	if n := countRows(t, db, `SELECT n FROM items WHERE id = 'during-outage'`); n != 1 {
		t.Errorf("the item was counted %d times; want 1", n)
	}
	if n := s.broker.Depth(poisonTopic, "reader"); n != 0 {
		t.Errorf("%d messages poisoned; want 0", n)
	}
}

// Building the graph with PostgreSQL on (what -check-config does) opens
// nothing: no connection, no goroutine (TestMain checks for leaks), even
// with min_conns above 0.
func TestPostgresGraphConnectsNothing(t *testing.T) {
	pgURL, proxy := proxiedPG(t)
	e, _ := pgEnv(t, pgURL, true)
	e["PGTEST_POSTGRES_MIN_CONNS"] = "2"
	var db *postgres.DB
	a := app.New(pgService(storeAndPublish), e, fx.Populate(&db), fx.NopLogger)
	if err := a.Err(); err != nil {
		t.Fatal(err)
	}
	if db == nil || db.Pool() != nil {
		t.Fatalf("the graph holds %v; want a DB not yet open", db)
	}
	if n := proxy.Conns(); n != 0 {
		t.Errorf("%d connections to PostgreSQL while only building the graph", n)
	}
}

// With the postgres section off the graph holds a nil *postgres.DB, which
// a service's wiring turns into its in-memory store.
func TestPostgresOffProvidesNil(t *testing.T) {
	db := new(postgres.DB)
	a := app.New(pgService(func(context.Context, ports.Publisher, *postgres.DB, ports.Message) error { return nil }),
		app.Env{"PGTEST_HTTP_ADDR": "off"}, fx.Populate(&db), fx.NopLogger)
	if err := a.Err(); err != nil {
		t.Fatal(err)
	}
	if db != nil {
		t.Errorf("the graph holds %v with postgres off; want nil", db)
	}
}

// An event through the outbox carries the trace context the direct path
// would: the producer span (the write to the outbox) is a child of the
// handler's, and the relayed message names it in traceparent.
func TestOutboxCarriesTraceContext(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e, _ := pgEnv(t, integration.PostgresURL(t), true)
	s := startService(t, pgService(storeAndPublish, fx.Supply(fx.Annotate(tp, fx.As(new(trace.TracerProvider))))), e)

	publish(t, s.broker, inTopic, "traced-1", "device-1")
	waitFor(t, "the event on the transport", func() bool { return s.broker.Depth(outTopic, "reader") == 1 })
	s.stop(t)
	got := receive(t, s.broker, outTopic, 1)[0]

	var send, handle sdktrace.ReadOnlySpan
	for _, sp := range spans.Ended() {
		switch sp.Name() {
		case "send " + outTopic:
			send = sp
		case "handle test":
			handle = sp
		}
	}
	if send == nil || handle == nil {
		t.Fatalf("%d spans; want the handler's and the outbox write's", len(spans.Ended()))
	}
	if send.Parent().SpanID() != handle.SpanContext().SpanID() {
		t.Errorf("the send span's parent is %s, want the handler span %s", send.Parent().SpanID(), handle.SpanContext().SpanID())
	}
	want := fmt.Sprintf("00-%s-%s-01", send.SpanContext().TraceID(), send.SpanContext().SpanID())
	if tp := got.Metadata.Get(transport.MetadataTraceParent); tp != want {
		t.Errorf("traceparent %q, want %q (the send span)", tp, want)
	}
}
