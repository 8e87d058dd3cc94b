package bench

// The status pipeline with PostgreSQL (issue 17): status reports (device,
// online/offline, time) from a RabbitMQ queue; each stores the device's
// status in PostgreSQL if it is newer than the stored one, and when the
// status changed a DeviceStatusChanged goes to another queue with a
// publisher confirm; the report is acked after all that.
//
//   - state/status-rabbitmq: state in PostgreSQL, events published
//     directly. hexmill: the test service's device-status handler and its
//     PostgreSQL store in the fx app (one transaction: the upsert that
//     locks the row, the publish and its confirm, commit). Raw: the same
//     by hand on amqp091-go and pgx.
//   - state/status-rabbitmq-dedup-outbox: the binding idempotent and the
//     event through the outbox. hexmill: idempotent: true (the dedup
//     record, the row and the outbox row in one transaction) and its
//     relay. Raw: one transaction inserting the processed-message record
//     ON CONFLICT DO NOTHING, the upsert and the outbox row; a relay loop
//     that reads the outbox in id order, publishes one row at a time with
//     its confirm and deletes what it published.
//
// Both sides: the same reports (opts.Messages over opts.Messages /
// stateReportsPerDevice devices), fed during the measurement by the same
// publisher; stateConcurrency messages in flight (prefetch and handlers);
// a pool of statePoolSize connections; a schema and queues of their own. The clock stops when
// every report was handled and every event the database counts
// (device_status.changes) arrived at the output; then the rows and events
// are checked.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/integration/testservice"
)

const (
	// stateConcurrency is the binding's concurrency (the subscriber's
	// prefetch) and the raw side's prefetch and workers: the default.
	stateConcurrency = config.DefaultConcurrency
	// statePoolSize is both pools' size: postgres.max_conns' default.
	statePoolSize = 10
	// stateReportsPerDevice sets the number of devices: opts.Messages /
	// it. A device's reports are that many messages apart in the queue.
	stateReportsPerDevice = 10
	// stateChannels is the raw side's confirm channels for events: the
	// RabbitMQ adapter's default publish.channels.
	stateChannels = 8
	// stateRelayBatch, stateRelayPoll and stateRelayBackoff are the raw
	// relay's batch, poll and wait after an error: the hexmill relay's
	// defaults.
	stateRelayBatch   = 100
	stateRelayPoll    = 200 * time.Millisecond
	stateRelayBackoff = 500 * time.Millisecond
)

func init() {
	available := func(ctx context.Context) error {
		if err := rabbitAvailable(ctx); err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		pg, err := pgx.Connect(pctx, postgresURL())
		if err != nil {
			return fmt.Errorf("set HEXMILL_TEST_POSTGRES_URL or start PostgreSQL (docker compose up postgres): %w", err)
		}
		return pg.Close(ctx)
	}
	register(Case{
		Name: "state/status-rabbitmq", Available: available,
		Hexmill: func(ctx context.Context, o Options) (Result, error) {
			return runState(ctx, o, "hexmill", stateTables{}, stateHexmill(false))
		},
		Raw: func(ctx context.Context, o Options) (Result, error) {
			return runState(ctx, o, "raw", stateTables{}, stateRawDirect)
		},
	})
	register(Case{
		Name: "state/status-rabbitmq-dedup-outbox", Available: available,
		Hexmill: func(ctx context.Context, o Options) (Result, error) {
			return runState(ctx, o, "hexmill-outbox", hexmillTables, stateHexmill(true))
		},
		Raw: func(ctx context.Context, o Options) (Result, error) {
			return runState(ctx, o, "raw-outbox", rawTables, stateRawOutbox)
		},
	})
}

// postgresURL is the database of the integration tests.
func postgresURL() string {
	return Env("HEXMILL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
}

// stateTables names a dedup-outbox side's tables of handled-message
// records and outbox rows; empty for the direct variant.
type stateTables struct{ records, outbox string }

var (
	hexmillTables = stateTables{records: "hexmill_processed_messages", outbox: "hexmill_outbox"}
	rawTables     = stateTables{records: "processed_messages", outbox: "outbox"}
)

// stateEnv is what a side gets: its queues and schema, and where it
// counts the reports it handled.
type stateEnv struct {
	in, out, schema string
	poison          string // hexmill's poison target, never used
	tables          stateTables
	messages        int
	handled         atomic.Int64
	allHandled      chan struct{}
	errs            atomic.Int64 // raw handling failures (the message is requeued)
}

func (e *stateEnv) done() {
	if e.handled.Add(1) == int64(e.messages) {
		close(e.allHandled)
	}
}

// stateSide starts one side's pipeline and returns its stop.
type stateSide func(ctx context.Context, env *stateEnv) (stop func() error, err error)

// stateReport is one input message.
type stateReport struct {
	DeviceID string    `json:"device_id"`
	Status   string    `json:"status"`
	At       time.Time `json:"at"`
}

// stateChanged is the event, as the test service publishes it.
type stateChanged struct {
	DeviceID string    `json:"device_id"`
	Online   bool      `json:"online"`
	At       time.Time `json:"at"`
}

var stateEpoch = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

// stateWorkload is report i: device i % devices, its report i / devices,
// one second after the previous one; the status changes every second
// report (online, online, offline, offline, ...), so about half of the
// reports publish an event.
func stateWorkload(n int) (bodies [][]byte, devices int, newest map[string]time.Time) {
	devices = max(n/stateReportsPerDevice, 1)
	newest = make(map[string]time.Time, devices)
	bodies = make([][]byte, n)
	for i := range n {
		j := i / devices
		r := stateReport{DeviceID: fmt.Sprintf("dev-%06d", i%devices), Status: "online", At: stateEpoch.Add(time.Duration(j) * time.Second)}
		if j/2%2 == 1 {
			r.Status = "offline"
		}
		bodies[i], _ = json.Marshal(r)
		newest[r.DeviceID] = r.At
	}
	return bodies, devices, newest
}

// runState runs one side once: fresh queues and schema, the side started,
// then the reports fed and the clock running until every report was
// handled and every event arrived.
func runState(ctx context.Context, opts Options, label string, tables stateTables, side stateSide) (res Result, err error) {
	if opts.Messages < 1 {
		return Result{}, errors.New("state: -n must be 1 or more")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	in, dropIn, err := benchQueue("state-in-" + label)
	if err != nil {
		return Result{}, err
	}
	defer dropIn()
	out, dropOut, err := benchQueue("state-out-" + label)
	if err != nil {
		return Result{}, err
	}
	defer dropOut()
	poison, dropPoison, err := benchQueue("state-poison-" + label)
	if err != nil {
		return Result{}, err
	}
	defer dropPoison()
	env := &stateEnv{
		in: in, out: out, poison: poison, tables: tables, messages: opts.Messages, allHandled: make(chan struct{}),
		schema: "bench_state_" + strings.ReplaceAll(label, "-", "_") + "_" + strings.ToLower(watermill.NewShortUUID()),
	}
	admin, err := pgx.Connect(ctx, postgresURL())
	if err != nil {
		return Result{}, err
	}
	defer func() {
		_, _ = admin.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{env.schema}.Sanitize()+` CASCADE`)
		_ = admin.Close(context.Background())
	}()
	bodies, devices, newest := stateWorkload(opts.Messages)

	sink, err := startEventSink(out)
	if err != nil {
		return Result{}, err
	}
	defer sink.close()
	stop, err := side(ctx, env)
	if err != nil {
		return Result{}, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = stop()
		}
	}()

	clk := startClock()
	if err := stateFeed(ctx, in, bodies); err != nil {
		return Result{}, fmt.Errorf("feed: %w", err)
	}
	select {
	case <-env.allHandled:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("%d of %d reports handled: %w", env.handled.Load(), opts.Messages, ctx.Err())
	}
	if env.tables.records != "" {
		// hexmill counts a report inside the handler's transaction: the
		// records tell when the last ones committed.
		if err := stateWaitRecords(ctx, admin, env); err != nil {
			return Result{}, err
		}
	}
	var changes int
	q := `SELECT coalesce(sum(changes), 0) FROM ` + pgx.Identifier{env.schema, "device_status"}.Sanitize()
	if err := admin.QueryRow(ctx, q).Scan(&changes); err != nil {
		return Result{}, fmt.Errorf("count changes: %w", err)
	}
	if err := sink.wait(ctx, changes); err != nil {
		return Result{}, fmt.Errorf("%d of %d events arrived: %w", sink.count(), changes, err)
	}
	res = clk.result(opts.Messages, nil)
	stopped = true
	if err := stop(); err != nil {
		return Result{}, fmt.Errorf("stop: %w", err)
	}
	return res, stateCheck(ctx, admin, env, sink, changes, devices, newest)
}

// stateWaitRecords waits until every report's dedup record committed.
func stateWaitRecords(ctx context.Context, admin *pgx.Conn, env *stateEnv) error {
	q := `SELECT count(*) FROM ` + pgx.Identifier{env.schema, env.tables.records}.Sanitize()
	for {
		var n int
		if err := admin.QueryRow(ctx, q).Scan(&n); err != nil {
			return fmt.Errorf("count records: %w", err)
		}
		if n >= env.messages {
			return nil
		}
		select {
		case <-time.After(5 * time.Millisecond): // commits cannot be awaited from here
		case <-ctx.Done():
			return fmt.Errorf("%d of %d records: %w", n, env.messages, ctx.Err())
		}
	}
}

// stateCheck makes sure the work was done: every device's row holds its
// newest report, every change arrived as an event exactly once, and the
// outbox is empty.
func stateCheck(ctx context.Context, admin *pgx.Conn, env *stateEnv, sink *eventSink, changes, devices int, newest map[string]time.Time) error {
	ids := make([]string, 0, len(newest))
	ats := make([]time.Time, 0, len(newest))
	for id, at := range newest {
		ids = append(ids, id)
		ats = append(ats, at)
	}
	var rows, current int
	table := pgx.Identifier{env.schema, "device_status"}.Sanitize()
	err := admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM `+table+`),
		(SELECT count(*) FROM `+table+` d JOIN unnest($1::text[], $2::timestamptz[]) AS e(id, at) ON d.device_id = e.id AND d.at = e.at)`,
		ids, ats).Scan(&rows, &current)
	if err != nil {
		return fmt.Errorf("check rows: %w", err)
	}
	var errs []error
	if rows != devices || current != devices {
		errs = append(errs, fmt.Errorf("%d rows, %d with the newest report; want %d", rows, current, devices))
	}
	if n, distinct := sink.totals(); n != changes || distinct != changes {
		errs = append(errs, fmt.Errorf("%d events (%d distinct); want %d, the changes the rows count", n, distinct, changes))
	}
	if env.tables.outbox != "" {
		var left int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{env.schema, env.tables.outbox}.Sanitize()).Scan(&left); err != nil {
			return fmt.Errorf("check outbox: %w", err)
		}
		if left != 0 {
			errs = append(errs, fmt.Errorf("%d rows left in the outbox", left))
		}
	}
	return errors.Join(errs...)
}

// stateFeed publishes the reports to queue, persistent, with pipelined
// confirms, each with its message ID.
func stateFeed(ctx context.Context, queue string, bodies [][]byte) error {
	conn, ch, err := confirmChannel()
	if err != nil {
		return err
	}
	defer conn.Close()
	dcs := make([]*amqp.DeferredConfirmation, 0, len(bodies))
	for _, b := range bodies {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, MessageId: watermill.NewUUID(), ContentType: "application/json", Body: b,
		})
		if err != nil {
			return err
		}
		dcs = append(dcs, dc)
	}
	for _, dc := range dcs {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("nacked")
		}
	}
	return nil
}

// eventSink counts the events on the output queue, and their distinct
// message IDs.
type eventSink struct {
	conn *amqp.Connection
	wg   sync.WaitGroup

	mu     sync.Mutex
	ids    map[string]struct{}
	n      int
	target int // -1 until wait
	reach  chan struct{}
}

func startEventSink(queue string) (*eventSink, error) {
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	s := &eventSink{conn: conn, ids: map[string]struct{}{}, target: -1, reach: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for d := range deliveries {
			s.mu.Lock()
			s.n++
			s.ids[d.MessageId] = struct{}{}
			if s.n == s.target {
				close(s.reach)
			}
			s.mu.Unlock()
		}
	}()
	return s, nil
}

func (s *eventSink) wait(ctx context.Context, target int) error {
	s.mu.Lock()
	s.target = target
	if s.n >= target {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	select {
	case <-s.reach:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *eventSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *eventSink) totals() (n, distinct int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, len(s.ids)
}

func (s *eventSink) close() {
	_ = s.conn.Close()
	s.wg.Wait()
}

// ---- hexmill: the test service in the fx app ----

// stateHexmill runs the test service with its device-status handler bound
// to the input queue, DeviceStatusChanged to the output queue and its
// store on PostgreSQL; with outbox the binding is idempotent, and the
// events go through the outbox and its relay.
func stateHexmill(outbox bool) stateSide {
	return func(ctx context.Context, env *stateEnv) (func() error, error) {
		conf := fmt.Sprintf(`http_addr: "off"
log:
  level: warn
transports:
  rabbitmq:
    url: %q
poison:
  transport: rabbitmq
  topic: %s
postgres:
  url: %q
  schema: %s
  max_conns: %d
handlers:
  %s:
    transport: rabbitmq
    topic: %s
    concurrency: %d
    idempotent: %t
events:
  DeviceStatusChanged:
    transport: rabbitmq
    topic: %s
`, rabbitURL(), env.poison, postgresURL(), env.schema, statePoolSize, testservice.StatusHandlerName, env.in, stateConcurrency, outbox, env.out)
		dir, err := os.MkdirTemp("", "hexmill-bench-state-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir) // read by app.New
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		// Counts the reports handled, as the raw side counts its acks.
		count := app.AsMiddleware(func() runtime.Middleware {
			return func(handler string, next message.HandlerFunc) message.HandlerFunc {
				if handler != testservice.StatusHandlerName {
					return next
				}
				return func(msg *message.Message) ([]*message.Message, error) {
					out, err := next(msg)
					if err == nil {
						env.done()
					}
					return out, err
				}
			}
		})
		svc := app.New(testservice.Service(), app.Env{"HEXMILL_CONFIG": path}, count, fx.NopLogger)
		if err := svc.Err(); err != nil {
			return nil, err
		}
		if err := svc.Start(ctx); err != nil {
			return nil, err
		}
		return func() error { return svc.Stop(context.Background()) }, nil
	}
}

// ---- raw: amqp091-go and pgx by hand ----

// stateRawSchema is the raw side's tables: the test service's
// device_status, and for the dedup-outbox variant the records of handled
// messages (with the index their retention needs) and the outbox.
const stateRawSchema = `
CREATE TABLE device_status (
    device_id  text        PRIMARY KEY,
    online     boolean     NOT NULL,
    at         timestamptz NOT NULL,
    changed_at timestamptz NOT NULL,
    changes    integer     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE processed_messages (
    message_id   text        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX processed_messages_processed_at ON processed_messages (processed_at);
CREATE TABLE outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id     text  NOT NULL,
    correlation_id text  NOT NULL,
    payload        bytea NOT NULL
);`

// stateApplySQL is the test service's store statement: it stores the
// report unless the stored one is at least as recent, locking the row,
// and returns a row only when it stored it, with whether the status
// changed.
const stateApplySQL = `
INSERT INTO device_status AS d (device_id, online, at, changed_at, changes)
VALUES ($1, $2, $3, $3, 1)
ON CONFLICT (device_id) DO UPDATE SET
    online     = excluded.online,
    at         = excluded.at,
    changed_at = CASE WHEN d.online = excluded.online THEN d.changed_at ELSE excluded.at END,
    changes    = d.changes + CASE WHEN d.online = excluded.online THEN 0 ELSE 1 END,
    updated_at = now()
WHERE d.at < excluded.at
RETURNING changed_at = at`

// rawState is the raw side's connections: a pool on its schema, a
// consumer channel and confirm channels.
type rawState struct {
	env      *stateEnv
	pool     *pgxpool.Pool
	conn     *amqp.Connection
	channels []*amqp.Channel
	wg       sync.WaitGroup
	relay    *rawRelay // dedup-outbox only
}

func openRawState(ctx context.Context, env *stateEnv) (*rawState, error) {
	cfg, err := pgxpool.ParseConfig(postgresURL())
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = statePoolSize
	cfg.ConnConfig.RuntimeParams["search_path"] = env.schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{env.schema}.Sanitize()+`;`+stateRawSchema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("schema: %w", err)
	}
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		pool.Close()
		return nil, err
	}
	r := &rawState{env: env, pool: pool, conn: conn}
	for range stateChannels {
		ch, err := conn.Channel()
		if err == nil {
			err = ch.Confirm(false)
		}
		if err != nil {
			r.close()
			return nil, err
		}
		r.channels = append(r.channels, ch)
	}
	return r, nil
}

func (r *rawState) close() {
	_ = r.conn.Close()
	r.pool.Close()
}

// consume runs stateConcurrency workers on the input queue with that
// prefetch; handle returns an error to requeue the message.
func (r *rawState) consume(handle func(ctx context.Context, ch *amqp.Channel, d amqp.Delivery) error) (func() error, error) {
	ch, err := r.conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Qos(stateConcurrency, 0, false); err != nil {
		return nil, err
	}
	deliveries, err := ch.Consume(r.env.in, "bench-raw", false, false, false, false, nil)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	for w := range stateConcurrency {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			pub := r.channels[w%len(r.channels)]
			for d := range deliveries {
				if err := handle(ctx, pub, d); err != nil {
					r.env.errs.Add(1)
					_ = d.Nack(false, true)
					continue
				}
				if err := d.Ack(false); err == nil {
					r.env.done()
				}
			}
		}()
	}
	return func() error {
		// As the stop protocol does: stop the deliveries, let the
		// messages in hand finish, then the relay drains the outbox.
		err := ch.Cancel("bench-raw", false)
		r.wg.Wait()
		cancel()
		if r.relay != nil {
			r.relay.stop()
		}
		r.close()
		if n := r.env.errs.Load(); n > 0 {
			err = errors.Join(err, fmt.Errorf("%d reports failed and were requeued", n))
		}
		return err
	}, nil
}

// decodeReport decodes and checks a report as the test service's handler
// does (unknown fields refused).
func decodeReport(body []byte) (stateReport, error) {
	var r stateReport
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, err
	}
	if r.DeviceID == "" || (r.Status != "online" && r.Status != "offline") || r.At.IsZero() {
		return r, fmt.Errorf("invalid report %s", body)
	}
	return r, nil
}

// correlationID is the incoming correlation_id, else its message ID, as
// the runtime takes it.
func correlationID(d amqp.Delivery) string {
	if d.CorrelationId != "" {
		return d.CorrelationId
	}
	return d.MessageId
}

// stateRawDirect: one transaction per report: the upsert, and when the
// status changed the event published and confirmed before the commit (a
// failed publish rolls the change back and the report is redelivered, as
// in the test service's store); then the ack.
func stateRawDirect(ctx context.Context, env *stateEnv) (func() error, error) {
	r, err := openRawState(ctx, env)
	if err != nil {
		return nil, err
	}
	stop, err := r.consume(func(ctx context.Context, ch *amqp.Channel, d amqp.Delivery) error {
		rep, err := decodeReport(d.Body)
		if err != nil {
			return err
		}
		return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
			body, err := stateApply(ctx, tx, rep)
			if err != nil || body == nil {
				return err
			}
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", env.out, true, false, amqp.Publishing{
				DeliveryMode: amqp.Persistent, MessageId: watermill.NewUUID(), CorrelationId: correlationID(d),
				Type: "DeviceStatusChanged", Body: body,
			})
			if err != nil {
				return err
			}
			if ok, err := dc.WaitContext(ctx); err != nil || !ok {
				return errors.Join(err, errors.New("event not confirmed"))
			}
			return nil
		})
	})
	if err != nil {
		r.close()
		return nil, err
	}
	return stop, nil
}

// stateApply stores rep in tx as the test service's store does, and
// returns the DeviceStatusChanged body when the status changed, else nil.
func stateApply(ctx context.Context, tx pgx.Tx, rep stateReport) ([]byte, error) {
	online := rep.Status == "online"
	var changed bool
	err := tx.QueryRow(ctx, stateApplySQL, rep.DeviceID, online, rep.At).Scan(&changed)
	switch {
	case errors.Is(err, pgx.ErrNoRows) || err == nil && !changed:
		return nil, nil
	case err != nil:
		return nil, err
	}
	return json.Marshal(stateChanged{DeviceID: rep.DeviceID, Online: online, At: rep.At})
}

// stateRawOutbox: one transaction per report: the record of its message
// ID (a duplicate commits nothing else and is acked), the upsert, and
// when the status changed the event's outbox row; after the commit the
// relay is woken and the report acked.
func stateRawOutbox(ctx context.Context, env *stateEnv) (func() error, error) {
	r, err := openRawState(ctx, env)
	if err != nil {
		return nil, err
	}
	if r.relay, err = startRawRelay(ctx, r.pool, r.channels[0], env.out); err != nil {
		r.close()
		return nil, err
	}
	stop, err := r.consume(func(ctx context.Context, _ *amqp.Channel, d amqp.Delivery) error {
		rep, err := decodeReport(d.Body)
		if err != nil {
			return err
		}
		wrote := false
		err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `INSERT INTO processed_messages (message_id) VALUES ($1) ON CONFLICT DO NOTHING`, d.MessageId)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			body, err := stateApply(ctx, tx, rep)
			if err != nil || body == nil {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO outbox (message_id, correlation_id, payload) VALUES ($1, $2, $3)`,
				watermill.NewUUID(), correlationID(d), body)
			wrote = err == nil
			return err
		})
		if err == nil && wrote {
			r.relay.notify()
		}
		return err
	})
	if err != nil {
		r.relay.stop()
		r.close()
		return nil, err
	}
	return stop, nil
}

// rawRelay is the outbox relay by hand: one at a time (an advisory lock
// on a connection it holds), rows in id order, each published and
// confirmed before the next (a failure never sends a later event before
// an earlier one), the published rows deleted after each batch.
type rawRelay struct {
	wake    chan struct{}
	stopped chan struct{}
	done    chan struct{}
}

func startRawRelay(ctx context.Context, pool *pgxpool.Pool, ch *amqp.Channel, queue string) (*rawRelay, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	var lead bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext('bench.outbox'))`).Scan(&lead); err != nil || !lead {
		conn.Release()
		return nil, errors.Join(err, errors.New("relay: lock not taken"))
	}
	r := &rawRelay{wake: make(chan struct{}, 1), stopped: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer conn.Release()
		batch := func() (int, error) {
			rows, err := conn.Query(context.Background(), `SELECT id, message_id, correlation_id, payload FROM outbox ORDER BY id LIMIT $1`, stateRelayBatch)
			if err != nil {
				return 0, err
			}
			type row struct {
				id        int64
				messageID string
				corrID    string
				payload   []byte
			}
			rs, err := pgx.CollectRows(rows, func(cr pgx.CollectableRow) (row, error) {
				var o row
				return o, cr.Scan(&o.id, &o.messageID, &o.corrID, &o.payload)
			})
			if err != nil {
				return 0, err
			}
			published := make([]int64, 0, len(rs))
			var perr error
			for _, o := range rs {
				dc, err := ch.PublishWithDeferredConfirm("", queue, true, false, amqp.Publishing{
					DeliveryMode: amqp.Persistent, MessageId: o.messageID, CorrelationId: o.corrID, Type: "DeviceStatusChanged", Body: o.payload,
				})
				if err == nil && !dc.Wait() {
					err = errors.New("nacked")
				}
				if perr = err; perr != nil {
					break
				}
				published = append(published, o.id)
			}
			if len(published) > 0 {
				if _, err := conn.Exec(context.Background(), `DELETE FROM outbox WHERE id = ANY($1)`, published); err != nil {
					return 0, err
				}
			}
			return len(published), perr
		}
		timer := time.NewTimer(0)
		defer timer.Stop()
		for {
			select {
			case <-r.stopped:
				for { // drain
					if n, err := batch(); err != nil || n == 0 {
						return
					}
				}
			case <-timer.C:
			case <-r.wake:
			}
			n, err := batch()
			wait := stateRelayPoll
			switch {
			case err != nil:
				wait = stateRelayBackoff
			case n == stateRelayBatch:
				wait = 0 // more rows wait
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(wait)
		}
	}()
	return r, nil
}

func (r *rawRelay) notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *rawRelay) stop() {
	close(r.stopped)
	<-r.done
}
