package integration_test

// Helpers of the end-to-end state tests (e2e_state_test.go): the status
// reports a test sends, their generator, the sink of DeviceStatusChanged
// events, the service's PostgreSQL schema and the final verification.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/integration"
)

// statusScale is the size of a state test.
type statusScale struct {
	Devices   int
	PerDevice int     // reports per device
	DupShare  float64 // share of reports sent twice
	Rate      float64 // reports per second over all publishers; 0: as fast as acknowledged
	// Alternate makes each of a device's reports the other status than
	// the one before it (in time), so that every report is a change.
	Alternate bool
}

// report is one status report as the generator sends it.
type report struct {
	id, device string // id is the report's message ID (watermill_uuid)
	online     bool
	at         time.Time // by the device's clock: orders a device's reports
}

// statusPlan is what a test sends: every device's reports, in random
// order across and within devices, some of them twice (the same message:
// payload and message ID).
type statusPlan struct {
	run    string
	sends  []report          // in sending order, duplicates included
	unique int               // distinct reports
	dups   int               // reports sent twice
	newest map[string]report // by device
	byAt   map[string]report // by device and at (key)
}

func atKey(device string, at time.Time) string {
	return device + "|" + at.UTC().Format(time.RFC3339Nano)
}

func newStatusPlan(run string, sc statusScale) *statusPlan {
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	base := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	p := &statusPlan{run: run, newest: map[string]report{}, byAt: map[string]report{}}
	for d := range sc.Devices {
		device := "st-" + run + "-" + strconv.Itoa(d)
		online := rng.IntN(2) == 0
		for k := range sc.PerDevice {
			if sc.Alternate {
				online = !online
			} else {
				online = rng.IntN(2) == 0
			}
			r := report{
				id: run + "-" + strconv.Itoa(d) + "-" + strconv.Itoa(k), device: device,
				online: online, at: base.Add(time.Duration(k) * time.Second),
			}
			p.sends = append(p.sends, r)
			p.byAt[atKey(device, r.at)] = r
			p.newest[device] = r
			p.unique++
			if rng.Float64() < sc.DupShare {
				p.sends = append(p.sends, r)
				p.dups++
			}
		}
	}
	rng.Shuffle(len(p.sends), func(i, j int) { p.sends[i], p.sends[j] = p.sends[j], p.sends[i] })
	return p
}

// statusState is what a state test owns besides the e2eEnv: the service's
// PostgreSQL schema and the sink of DeviceStatusChanged.
type statusState struct {
	t    *testing.T
	db   *postgres.DB
	sink *statusSink
}

// withState binds the test service's device-status handler (idempotent,
// MQTT, the test's group) and DeviceStatusChanged (the test's exchange),
// with PostgreSQL at pgURL in a schema of the test's own, dropped when the
// test ends. It starts the sinks: the events' and the alerts' (the
// AlertRaised binding must have a queue to start).
func (e *e2eEnv) withState(pgURL string) *statusState {
	t := e.t
	t.Helper()
	schema := "e2e_" + e.run
	e.extraHandlers = fmt.Sprintf(`  device-status:
    transport: mqtt
    topic: devices/+/status
    group: %s
    topic_params: devices/{device_id}/status
    idempotent: true
`, e.group)
	e.extraEvents = fmt.Sprintf(`  DeviceStatusChanged:
    transport: rabbitmq
    topic: DeviceStatusChanged
    options:
      exchange: %s
`, e.exchange)
	e.extra += fmt.Sprintf(`postgres:
  url: %s
  schema: %s
  connect_timeout: 2s
  relay:
    poll_interval: 50ms
    retry_backoff: 100ms
`, pgURL, schema)
	db := integration.PostgresSchema(t, postgres.Config{URL: pgURL, Schema: schema, ConnectTimeout: 2 * time.Second})
	e.checker(15 * time.Second)
	return &statusState{t: t, db: db, sink: newStatusSink(t, e.rabbitURL, e.exchange, "e2e-"+e.run+"-status")}
}

// count runs a count query; an error (the database down) is returned.
func (s *statusState) count(ctx context.Context, query string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var n int
	err := s.db.Pool().QueryRow(ctx, query).Scan(&n)
	return n, err
}

const (
	countProcessed = `SELECT count(*) FROM hexmill_processed_messages WHERE handler = 'device-status'`
	countOutbox    = `SELECT count(*) FROM hexmill_outbox`
	sumChanges     = `SELECT coalesce(sum(changes), 0) FROM device_status`
)

// await polls query every 50 ms until cond holds for its result (an error,
// e.g. the database restarting, counts as not yet); it fails the test when
// ctx ends first.
func (s *statusState) await(ctx context.Context, what, query string, cond func(int) bool) int {
	s.t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var (
		n   int
		err error
	)
	for {
		if n, err = s.count(ctx, query); err == nil && cond(n) {
			return n
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			s.t.Fatalf("%s: not reached (last %d, %v): %v", what, n, err, ctx.Err())
		}
	}
}

// awaitSettled waits until every report was handled (one record per
// distinct report), the outbox is empty and the sink has as many distinct
// events as the devices have changes.
func (s *statusState) awaitSettled(ctx context.Context, plan *statusPlan) {
	s.t.Helper()
	s.await(ctx, "every report handled", countProcessed, func(n int) bool { return n >= plan.unique })
	s.await(ctx, "outbox empty", countOutbox, func(n int) bool { return n == 0 })
	changes := s.await(ctx, "changes counted", sumChanges, func(int) bool { return true })
	if err := s.sink.awaitUnique(ctx, changes); err != nil {
		s.t.Fatalf("events: %d of %d: %v", s.sink.unique(), changes, err)
	}
	// An event beyond the changes would be a duplicate: give it a moment
	// to show (an absence cannot be awaited).
	grace := time.NewTimer(time.Second)
	defer grace.Stop()
	<-grace.C
}

// sendStatus publishes plan's reports to the MQTT broker at addr (QoS 1,
// each with its message ID in watermill_uuid, as a watermill publisher
// sends it), over publishers connections, at rate reports per second (0:
// as fast as acknowledged). The goroutines are the test's; the result
// comes on the returned channel. sent counts the acknowledged reports.
func sendStatus(t *testing.T, ctx context.Context, addr string, plan *statusPlan, publishers int, rate float64) (<-chan error, *atomic.Int64) {
	t.Helper()
	clients := make([]*paho.Client, publishers)
	for i := range clients {
		clients[i] = rawMQTTClient(t, ctx, addr, fmt.Sprintf("e2e-status-%s-%d", plan.run, i))
	}
	jobs := make(chan report)
	out := make(chan error, 1)
	errs := make(chan error, publishers)
	sent := new(atomic.Int64)
	var publishing, wg sync.WaitGroup
	for _, c := range clients {
		publishing.Add(1)
		go func() {
			defer publishing.Done()
			for r := range jobs {
				if err := publishReport(ctx, c, r); err != nil {
					errs <- err
					return
				}
				sent.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := feed(ctx, plan.sends, rate, jobs, errs)
		close(jobs)
		publishing.Wait()
		for {
			select {
			case e := <-errs:
				err = errors.Join(err, e)
			default:
				out <- err
				return
			}
		}
	}()
	t.Cleanup(wg.Wait)
	return out, sent
}

// feed hands the reports to the publishers at rate (0: as fast as they
// take them) until done, a publisher fails or ctx ends.
func feed(ctx context.Context, sends []report, rate float64, jobs chan<- report, errs <-chan error) error {
	start := time.Now()
	for i, r := range sends {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
				select {
				case <-time.After(d): // pacing the load
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		select {
		case jobs <- r:
		case err := <-errs:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func publishReport(ctx context.Context, c *paho.Client, r report) error {
	status := "offline"
	if r.online {
		status = "online"
	}
	payload, _ := json.Marshal(map[string]any{"device_id": r.device, "status": status, "at": r.at})
	resp, err := c.Publish(ctx, &paho.Publish{
		Topic: "devices/" + r.device + "/status", QoS: 1, Payload: payload,
		Properties: &paho.PublishProperties{ContentType: "application/json", User: paho.UserProperties{{Key: mqtt.PropertyUUID, Value: r.id}}},
	})
	if err != nil {
		return fmt.Errorf("publish %s: %w", r.id, err)
	}
	if resp != nil && resp.ReasonCode != 0 {
		return fmt.Errorf("publish %s: reason code %#x", r.id, resp.ReasonCode)
	}
	return nil
}

// statusEvent is a DeviceStatusChanged as the sink got it.
type statusEvent struct {
	id       string    // the AMQP message_id: the event's UUID, kept by the relay
	DeviceID string    `json:"device_id"`
	Online   bool      `json:"online"`
	At       time.Time `json:"at"`
}

// statusSink consumes DeviceStatusChanged from a queue of the test bound
// to the events exchange, deleted when the test ends.
type statusSink struct {
	mu      sync.Mutex
	events  []statusEvent  // distinct (by id), in arrival order
	copies  map[string]int // by id
	bad     []string       // bodies that did not decode
	changed chan struct{}  // closed and replaced on every event
}

func newStatusSink(t *testing.T, url, exchange, queue string) *statusSink {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		t.Fatalf("declare %s: %v", queue, err)
	}
	if err := ch.QueueBind(queue, "DeviceStatusChanged", exchange, false, nil); err != nil {
		t.Fatalf("bind %s: %v", queue, err)
	}
	deliveries, err := ch.Consume(queue, "", true, true, false, false, nil)
	if err != nil {
		t.Fatalf("consume %s: %v", queue, err)
	}
	s := &statusSink{copies: map[string]int{}, changed: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range deliveries {
			s.record(d)
		}
	}()
	t.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(queue, false, false, false)
		}
		_ = conn.Close()
		<-done
	})
	return s
}

func (s *statusSink) record(d amqp.Delivery) {
	var e statusEvent
	err := json.Unmarshal(d.Body, &e)
	e.id = d.MessageId
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || e.id == "" {
		s.bad = append(s.bad, string(d.Body))
		return
	}
	s.copies[e.id]++
	if s.copies[e.id] == 1 {
		s.events = append(s.events, e)
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *statusSink) unique() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

// awaitUnique waits until the sink has n distinct events.
func (s *statusSink) awaitUnique(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		got, changed := len(s.events), s.changed
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stateFigures is what verify found.
type stateFigures struct {
	devices, stale        int // devices; those whose row is not their newest report
	events, changes       int // distinct events; status changes counted in the rows
	redelivered           int // copies of an event (same UUID) beyond the first
	duplicated            int // events repeating a device's earlier change under another UUID
	outOfOrder, unknown   int // events older than the device's previous one; events of no report
	mismatched            int // devices whose events do not match their row
	firstMismatch, stale1 string
}

func (f stateFigures) String() string {
	return fmt.Sprintf("%d devices (%d stale); %d events for %d changes; duplicated %d, out of order %d, unknown %d, devices mismatched %d; redelivered copies (same UUID) %d",
		f.devices, f.stale, f.events, f.changes, f.duplicated, f.outOfOrder, f.unknown, f.mismatched, f.redelivered)
}

// verify checks the end state: every device's row is its newest report,
// and its events are its changes, each once, in order: as many as the
// row counts, alternating, each a report of the device, the last one the
// row's status.
func (s *statusState) verify(ctx context.Context, plan *statusPlan) stateFigures {
	t := s.t
	t.Helper()
	type row struct {
		online  bool
		at      time.Time
		changes int
	}
	rows := map[string]row{}
	res, err := s.db.Pool().Query(ctx, `SELECT device_id, online, at, changes FROM device_status`)
	if err != nil {
		t.Fatal(err)
	}
	for res.Next() {
		var (
			id string
			r  row
		)
		if err := res.Scan(&id, &r.online, &r.at, &r.changes); err != nil {
			t.Fatal(err)
		}
		rows[id] = r
	}
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}

	s.sink.mu.Lock()
	events := slices.Clone(s.sink.events)
	f := stateFigures{devices: len(plan.newest), events: len(events)}
	for _, n := range s.sink.copies {
		f.redelivered += n - 1
	}
	if len(s.sink.bad) > 0 {
		t.Errorf("%d events did not decode, first: %s", len(s.sink.bad), s.sink.bad[0])
	}
	s.sink.mu.Unlock()

	byDevice := map[string][]statusEvent{}
	for _, e := range events {
		r, ok := plan.byAt[atKey(e.DeviceID, e.At)]
		if !ok || r.online != e.Online {
			f.unknown++
			continue
		}
		byDevice[e.DeviceID] = append(byDevice[e.DeviceID], e)
	}
	devices := make([]string, 0, len(plan.newest))
	for d := range plan.newest {
		devices = append(devices, d)
	}
	sort.Strings(devices)
	for _, d := range devices {
		want, r := plan.newest[d], rows[d]
		f.changes += r.changes
		if !r.at.Equal(want.at) || r.online != want.online {
			f.stale++
			if f.stale1 == "" {
				f.stale1 = fmt.Sprintf("%s: row %+v, newest report online=%v at %s", d, r, want.online, want.at)
			}
		}
		evs := byDevice[d]
		seen := map[time.Time]bool{}
		ok := len(evs) == r.changes
		for i, e := range evs {
			if seen[e.At] {
				f.duplicated++
			}
			seen[e.At] = true
			if i > 0 && !e.At.After(evs[i-1].At) {
				f.outOfOrder++
				ok = false
			}
			if i > 0 && e.Online == evs[i-1].Online {
				ok = false
			}
		}
		if len(evs) > 0 && evs[len(evs)-1].Online != r.online {
			ok = false
		}
		if !ok {
			f.mismatched++
			if f.firstMismatch == "" {
				f.firstMismatch = fmt.Sprintf("%s: row %+v, events %+v", d, r, evs)
			}
		}
	}
	t.Logf("state: %s", f)
	if f.stale > 0 {
		t.Errorf("%d devices do not hold their newest report, first: %s", f.stale, f.stale1)
	}
	if f.duplicated > 0 || f.outOfOrder > 0 || f.unknown > 0 || f.mismatched > 0 || f.events != f.changes {
		t.Errorf("events are not the changes, each once and in order; first device off: %s", f.firstMismatch)
	}
	return f
}

// poisoned is the number of messages on the test's poison queue.
func (e *e2eEnv) poisoned() int {
	e.t.Helper()
	conn, err := amqp.Dial(e.rabbitURL)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		e.t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive(e.poisonQueue, false, false, false, false, nil)
	if err != nil {
		e.t.Fatalf("poison queue %s: %v", e.poisonQueue, err)
	}
	return q.Messages
}

// relayHolder waits until one of the replicas logs that its outbox relay
// is the active one, and returns it.
func relayHolder(t *testing.T, ctx context.Context, replicas []*service) *service {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, r := range replicas {
			if r.CountLog(integration.MsgIs("Outbox relay is the active one")) > 0 {
				return r
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no replica's relay became active")
		}
	}
}
