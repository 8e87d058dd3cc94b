package integration_test

// The dlq subcommand on the real binary (integration/testservice): dead
// letters on a RabbitMQ poison queue and in PostgreSQL's table, listed,
// shown, replayed (also killed mid-replay, and with dedup) and purged.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/app/dlq"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/load"
)

// dlqEnv is one test's service: the telemetry and device-status handlers
// on RabbitMQ queues of its own, PostgreSQL in a schema of its own, and
// its poison target on the store under test.
type dlqEnv struct {
	t                                  *testing.T
	run, store                         string
	rabbitURL                          string
	telemetryQ, statusQ, poisonQ, sink string
	db                                 *postgres.DB
	conf                               string
	ch                                 *amqp.Channel
}

func newDLQEnv(t *testing.T, store string) *dlqEnv {
	t.Helper()
	rabbitURL := integration.RabbitMQURL(t)
	pgURL := integration.PostgresURL(t)
	run := load.NewRunID()
	e := &dlqEnv{t: t, run: run, store: store, rabbitURL: rabbitURL,
		telemetryQ: "dlq-" + run + "-telemetry", statusQ: "dlq-" + run + "-status", poisonQ: "dlq-" + run + "-poison", sink: "dlq-" + run + "-sink"}
	schema := "dlq_" + run
	e.db = integration.PostgresSchema(t, postgres.Config{URL: pgURL, Schema: schema, ConnectTimeout: 5 * time.Second})
	e.ch = integration.RabbitMQChannel(t, rabbitURL)
	if err := e.ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ch := integration.RabbitMQChannel(t, rabbitURL)
		for _, q := range []string{e.telemetryQ, e.statusQ, e.poisonQ, e.sink} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
	})
	conf := fmt.Sprintf(`service: dlq-%[1]s
http_addr: 127.0.0.1:0
drain_timeout: 5s
log:
  level: info
  format: json
retry:
  max_retries: 0
  initial_interval: 10ms
  max_interval: 10ms
  multiplier: 1
poison:
  transport: %[2]s
  topic: %[5]s
postgres:
  url: %[7]s
  schema: %[8]s
  relay:
    poll_interval: 50ms
transports:
  rabbitmq:
    url: %[9]s
    queues:
      - name: %[3]s
      - name: %[4]s
      - name: %[5]s
      - name: %[6]s
handlers:
  telemetry:
    transport: rabbitmq
    topic: %[3]s
    concurrency: 4
  device-status:
    transport: rabbitmq
    topic: %[4]s
    concurrency: 4
    idempotent: true
events:
  AlertRaised:
    transport: rabbitmq
    topic: %[6]s
  DeviceStatusChanged:
    transport: rabbitmq
    topic: %[6]s
`, run, store, e.telemetryQ, e.statusQ, e.poisonQ, e.sink, pgURL, schema, rabbitURL)
	e.conf = filepath.Join(t.TempDir(), "dlq.yaml")
	if err := os.WriteFile(e.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// start starts the service, clock_skew set to skew, and waits until it
// consumes.
func (e *dlqEnv) start(skew string) *service {
	t := e.t
	t.Helper()
	cmd := exec.Command(hexmillBinary(t))
	cmd.Env = append(os.Environ(), "HEXMILL_CONFIG="+e.conf, "HEXMILL_DOMAIN_CLOCK_SKEW="+skew, "GORACE=halt_on_error=1")
	s := &service{Process: integration.StartProcess(t, "service", cmd), name: "service"}
	t.Cleanup(func() {
		if t.Failed() {
			s.Dump(t, 30)
		}
	})
	s.addr, _ = s.WaitLog(t, "ops http listening", integration.MsgIs("ops http listening"))["addr"].(string)
	s.WaitLog(t, "consuming", integration.MsgIs("consuming"))
	return s
}

// stop stops the service with SIGTERM and waits for it.
func (e *dlqEnv) stop(s *service) {
	e.t.Helper()
	s.signal(e.t, syscall.SIGTERM)
	if err := s.Wait(); err != nil {
		e.t.Fatalf("service stop: %v", err)
	}
}

// dlqCmd is the dlq command with the service's configuration.
func (e *dlqEnv) dlqCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(hexmillBinary(e.t), append([]string{"dlq"}, args...)...)
	cmd.Env = append(os.Environ(), "HEXMILL_CONFIG="+e.conf, "GORACE=halt_on_error=1")
	return cmd
}

// dlq runs the dlq command to its end and fails the test unless it
// succeeds; it returns its output.
func (e *dlqEnv) dlq(args ...string) string {
	e.t.Helper()
	cmd := e.dlqCmd(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		e.t.Fatalf("dlq %v: %v\nstdout: %s\nstderr: %s", args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// dlqExit runs the dlq command to its end and returns its exit status,
// stdout and stderr.
func (e *dlqEnv) dlqExit(args ...string) (int, string, string) {
	e.t.Helper()
	cmd := e.dlqCmd(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return exitCode(err), stdout.String(), stderr.String()
}

// list runs dlq list --json with args.
func (e *dlqEnv) list(args ...string) []dlq.Letter {
	e.t.Helper()
	var out []dlq.Letter
	if err := json.Unmarshal([]byte(e.dlq(append([]string{"list", "--json"}, args...)...)), &out); err != nil {
		e.t.Fatalf("dlq list %v: %v", args, err)
	}
	return out
}

// publish publishes body to queue with message ID id, confirmed.
func (e *dlqEnv) publish(queue, id string, body string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dc, err := e.ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false,
		amqp.Publishing{MessageId: id, Body: []byte(body), DeliveryMode: amqp.Persistent, ContentType: "application/json"})
	if err != nil {
		e.t.Fatal(err)
	}
	if ok, err := dc.WaitContext(ctx); !ok || err != nil {
		e.t.Fatalf("publish %s: not confirmed: %v", id, err)
	}
}

// statusAhead is a device status report timed an hour ahead: poisoned
// while clock_skew is below that, handled once it is above.
func statusAhead(device string) string {
	return fmt.Sprintf(`{"device_id":%q,"status":"online","at":%q}`, device, time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano))
}

// telemetryEmpty is a telemetry message with no readings: always poisoned.
func telemetryEmpty(device string) string {
	return fmt.Sprintf(`{"device_id":%q,"readings":{}}`, device)
}

// awaitPoisoned waits for n more "message poisoned" log lines.
func awaitPoisoned(t *testing.T, s *service, n int) {
	t.Helper()
	for i := range n {
		s.WaitLog(t, fmt.Sprintf("poisoned message %d of %d", i+1, n), integration.MsgIs("message poisoned"))
	}
}

// awaitCount polls a count query until cond holds; it fails the test after
// two minutes.
func (e *dlqEnv) awaitCount(what, query string, cond func(int) bool) int {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		err := e.db.Pool().QueryRow(context.Background(), query).Scan(&n)
		if err == nil && cond(n) {
			return n
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: still %d (%v) after 2m", what, n, err)
		}
		<-tick.C
	}
}

// queueDepth is the number of ready messages in queue.
func (e *dlqEnv) queueDepth(queue string) int {
	e.t.Helper()
	ch := integration.RabbitMQChannel(e.t, e.rabbitURL)
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	_ = ch.Close()
	return q.Messages
}

func byHandler(letters []dlq.Letter) map[string]int {
	m := map[string]int{}
	for _, l := range letters {
		m[l.Handler]++
	}
	return m
}

// TestDLQ poisons 50 messages of two reasons (25 status reports ahead of
// the clock, 25 telemetry messages without readings), lists and filters
// them, shows one, replays the status reports once the clock skew allows
// them (they are handled, the others stay) and purges the rest: on a
// RabbitMQ poison queue and in PostgreSQL's table.
func TestDLQ(t *testing.T) {
	for _, store := range []string{"rabbitmq", "postgres"} {
		t.Run(store, func(t *testing.T) {
			e := newDLQEnv(t, store)
			s := e.start("5m")
			for i := range 25 {
				e.publish(e.statusQ, fmt.Sprintf("status-%d", i), statusAhead(fmt.Sprintf("dev-%d", i)))
				e.publish(e.telemetryQ, fmt.Sprintf("telemetry-%d", i), telemetryEmpty(fmt.Sprintf("dev-%d", i)))
			}
			awaitPoisoned(t, s, 50)

			all := e.list()
			if len(all) != 50 {
				t.Fatalf("list: %d dead letters, want 50", len(all))
			}
			if got := byHandler(all); got["telemetry"] != 25 || got["device-status"] != 25 {
				t.Fatalf("list by handler: %v, want 25 each", got)
			}
			for _, l := range all {
				if l.ID == "" || l.MessageID == "" || l.Reason == "" || l.Attempts < 1 || l.Size == 0 || l.First.IsZero() || l.Last.Before(l.First) {
					t.Fatalf("list: incomplete dead letter %+v", l)
				}
			}
			for _, c := range []struct {
				args []string
				want int
			}{
				{[]string{"--handler", "telemetry"}, 25},
				{[]string{"--reason", "CLOCK_SKEW"}, 25},
				{[]string{"--reason", "readings is empty", "--handler", "telemetry"}, 25},
				{[]string{"--reason", "clock_skew", "--handler", "telemetry"}, 0},
				{[]string{"--newer-than", "1h"}, 50},
				{[]string{"--older-than", "1h"}, 0},
			} {
				if got := e.list(c.args...); len(got) != c.want {
					t.Errorf("list %v: %d dead letters, want %d", c.args, len(got), c.want)
				}
			}
			if store == "postgres" {
				_, body, err := s.get("/metrics")
				if err != nil || !strings.Contains(body, `hexmill_dead_letters{handler_name="device-status"} 25`) ||
					!strings.Contains(body, `hexmill_dead_letters{handler_name="telemetry"} 25`) {
					t.Errorf("/metrics: no dead-letter gauge of 25 per handler (%v)", err)
				}
			}

			one := e.list("--handler", "device-status")[0]
			var shown dlq.Letter
			if err := json.Unmarshal([]byte(e.dlq("show", one.ID, "--json")), &shown); err != nil {
				t.Fatal(err)
			}
			if shown.MessageID != one.MessageID || !strings.Contains(string(shown.Payload), `"status":"online"`) ||
				shown.Metadata["poisoned_at"] == "" || shown.Metadata["handler_poisoned"] != "device-status" {
				t.Errorf("show %s: %+v", one.ID, shown)
			}
			if text := e.dlq("show", one.ID); !strings.Contains(text, "payload:") || !strings.Contains(text, one.MessageID) {
				t.Errorf("show %s:\n%s", one.ID, text)
			}

			// The fix: a clock skew that allows the reports.
			e.stop(s)
			s = e.start("3h")
			if out := e.dlq("replay", "--reason", "clock_skew"); !strings.Contains(out, "replayed 25 dead letters") {
				t.Fatalf("replay: %q", out)
			}
			e.awaitCount("device statuses stored", `SELECT count(*) FROM device_status`, func(n int) bool { return n == 25 })
			e.awaitCount("status messages recorded as handled", `SELECT count(*) FROM hexmill_processed_messages WHERE handler = 'device-status' AND message_id LIKE 'status-%'`,
				func(n int) bool { return n == 25 })
			rest := e.list()
			if got := byHandler(rest); len(rest) != 25 || got["telemetry"] != 25 {
				t.Fatalf("after replay: %v, want the 25 telemetry messages", got)
			}
			if n := s.CountLog(integration.MsgIs("message poisoned")); n != 0 {
				t.Errorf("%d replayed messages poisoned again", n)
			}
			if out := e.dlq("purge", "--handler", "telemetry"); !strings.Contains(out, "purged 25 dead letters") {
				t.Fatalf("purge: %q", out)
			}
			if left := e.list(); len(left) != 0 {
				t.Fatalf("after purge: %d dead letters", len(left))
			}
			e.stop(s)
		})
	}
}

// queueIDs are the message IDs in queue, read without taking them: the
// channel closes with them unacked.
func (e *dlqEnv) queueIDs(queue string) map[string]bool {
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
	ids := map[string]bool{}
	for {
		d, ok, err := ch.Get(queue, false)
		if err != nil {
			e.t.Fatal(err)
		}
		if !ok {
			return ids
		}
		ids[d.MessageId] = true
	}
}

// TestDLQReplayKilled SIGKILLs dlq replay while it republishes: every
// dead letter is then in the DLQ or on its handler's queue (the republish
// was confirmed before it left the DLQ), and a second replay and the
// service handle them all.
func TestDLQReplayKilled(t *testing.T) {
	const n = 600
	for _, store := range []string{"rabbitmq", "postgres"} {
		t.Run(store, func(t *testing.T) {
			e := newDLQEnv(t, store)
			s := e.start("5m")
			for i := range n {
				e.publish(e.statusQ, fmt.Sprintf("status-%d", i), statusAhead(fmt.Sprintf("dev-%d", i)))
			}
			awaitPoisoned(t, s, n)
			e.stop(s) // the replayed messages stay on the handler's queue

			replay := e.dlqCmd("replay", "--all")
			var out bytes.Buffer
			replay.Stdout, replay.Stderr = &out, &out
			if err := replay.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(2 * time.Minute)
			tick := time.NewTicker(5 * time.Millisecond)
			for e.queueDepth(e.statusQ) < 20 {
				if time.Now().After(deadline) {
					t.Fatalf("replay republished nothing in 2m: %s", out.String())
				}
				<-tick.C
			}
			tick.Stop()
			_ = replay.Process.Signal(syscall.SIGKILL)
			_ = replay.Wait()

			// RabbitMQ requeues the killed command's unacked messages
			// once it notices the connection is gone.
			var inDLQ, onQueue map[string]bool
			deadline = time.Now().Add(2 * time.Minute)
			for {
				inDLQ, onQueue = map[string]bool{}, e.queueIDs(e.statusQ)
				for _, l := range e.list() {
					inDLQ[l.MessageID] = true
				}
				missing := 0
				for i := range n {
					id := fmt.Sprintf("status-%d", i)
					if !inDLQ[id] && !onQueue[id] {
						missing++
					}
				}
				if missing == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after the kill %d messages are neither in the DLQ (%d) nor on the queue (%d)", missing, len(inDLQ), len(onQueue))
				}
				time.Sleep(100 * time.Millisecond) // polling the broker's requeue: no event to await
			}
			if len(inDLQ) == 0 {
				t.Fatalf("replay finished before the kill (%d on the queue): the test proves nothing", len(onQueue))
			}
			t.Logf("killed mid-replay: %d still in the DLQ, %d on the handler's queue", len(inDLQ), len(onQueue))

			if out := e.dlq("replay", "--all"); !strings.Contains(out, fmt.Sprintf("replayed %d dead letters", len(inDLQ))) {
				t.Fatalf("second replay: %q", out)
			}
			s = e.start("3h")
			e.awaitCount("device statuses stored", `SELECT count(*) FROM device_status`, func(c int) bool { return c == n })
			if left := e.list(); len(left) != 0 {
				t.Fatalf("%d dead letters left", len(left))
			}
			e.stop(s)
		})
	}
}

// duplicate puts a second copy of the only dead letter in the DLQ, as a
// replay killed between its confirmed republish and its delete (or ack)
// leaves it.
func (e *dlqEnv) duplicate() {
	e.t.Helper()
	if e.store == "postgres" {
		_, err := e.db.Pool().Exec(context.Background(), `INSERT INTO hexmill_dead_letters
			(handler, topic, transport, reason, message_id, attempts, metadata, payload, first_failed_at, last_failed_at)
			SELECT handler, topic, transport, reason, message_id, attempts, metadata, payload, first_failed_at, last_failed_at FROM hexmill_dead_letters`)
		if err != nil {
			e.t.Fatal(err)
		}
		return
	}
	ch := integration.RabbitMQChannel(e.t, e.rabbitURL)
	d, ok, err := ch.Get(e.poisonQ, false)
	if err != nil || !ok {
		e.t.Fatalf("get the dead letter: %v %v", ok, err)
	}
	if err := e.ch.PublishWithContext(context.Background(), "", e.poisonQ, true, false, amqp.Publishing{MessageId: d.MessageId,
		Headers: d.Headers, ContentType: d.ContentType, Body: d.Body, DeliveryMode: amqp.Persistent}); err != nil {
		e.t.Fatal(err)
	}
	if err := d.Nack(false, true); err != nil {
		e.t.Fatal(err)
	}
}

// TestDLQReplayDedup replays a dead letter twice (two copies in the DLQ)
// to an idempotent binding: it is handled once.
func TestDLQReplayDedup(t *testing.T) {
	for _, store := range []string{"rabbitmq", "postgres"} {
		t.Run(store, func(t *testing.T) {
			e := newDLQEnv(t, store)
			s := e.start("5m")
			e.publish(e.statusQ, "status-dup", statusAhead("dev-dup"))
			awaitPoisoned(t, s, 1)
			e.stop(s)
			e.duplicate()
			if got := e.list(); len(got) != 2 || got[0].MessageID != "status-dup" || got[1].MessageID != "status-dup" {
				t.Fatalf("two copies of status-dup expected in the DLQ: %+v", got)
			}

			s = e.start("3h")
			if out := e.dlq("replay", "--all"); !strings.Contains(out, "replayed 2 dead letters") {
				t.Fatalf("replay: %q", out)
			}
			deadline := time.Now().Add(2 * time.Minute)
			for s.handledBy(t, "device-status") < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("device-status handled %d of the 2 copies in 2m", s.handledBy(t, "device-status"))
				}
				time.Sleep(20 * time.Millisecond) // polling /metrics: no event to await
			}
			var recorded, changes int
			ctx := context.Background()
			if err := e.db.Pool().QueryRow(ctx, `SELECT count(*) FROM hexmill_processed_messages WHERE handler = 'device-status' AND message_id = 'status-dup'`).Scan(&recorded); err != nil {
				t.Fatal(err)
			}
			if err := e.db.Pool().QueryRow(ctx, `SELECT changes FROM device_status WHERE device_id = 'dev-dup'`).Scan(&changes); err != nil {
				t.Fatal(err)
			}
			if recorded != 1 || changes != 1 {
				t.Fatalf("status-dup recorded %d times, its device changed %d times; want 1 and 1", recorded, changes)
			}
			e.awaitCount("outbox relayed", `SELECT count(*) FROM hexmill_outbox`, func(c int) bool { return c == 0 })
			if got := len(e.queueIDs(e.sink)); got != 1 {
				t.Fatalf("%d DeviceStatusChanged events for one replayed message twice, want 1", got)
			}
			e.stop(s)
		})
	}
}

// messageIDs are the letters' message IDs, in order.
func messageIDs(letters []dlq.Letter) []string {
	ids := make([]string, len(letters))
	for i, l := range letters {
		ids[i] = l.MessageID
	}
	return ids
}

// firstSelected are the message IDs a command bounded by --max max acts
// on, in the store's order: on RabbitMQ those that sel selects among the
// first max messages (the bound counts every message read), on
// PostgreSQL the first max that sel selects (it counts rows selected).
func firstSelected(store string, letters []dlq.Letter, max int, sel func(dlq.Letter) bool) map[string]bool {
	out := map[string]bool{}
	for i, l := range letters {
		if store == "rabbitmq" && i == max || len(out) == max {
			break
		}
		if sel(l) {
			out[l.MessageID] = true
		}
	}
	return out
}

// without is ids less those in drop, in order.
func without(ids []string, drop map[string]bool) []string {
	var out []string
	for _, id := range ids {
		if !drop[id] {
			out = append(out, id)
		}
	}
	return out
}

// TestDLQMax bounds each command with --max below the number of dead
// letters (10 status reports poisoned first, then 20 telemetry
// messages): list prints the first ones and notes it is partial; show
// stops at its letter; purge and replay act on the first ones, then stop
// with an error naming the bound, and every dead letter they did not act
// on is still there.
func TestDLQMax(t *testing.T) {
	for _, store := range []string{"rabbitmq", "postgres"} {
		t.Run(store, func(t *testing.T) {
			e := newDLQEnv(t, store)
			s := e.start("5m")
			// Two rounds, so that the statuses come first in the DLQ.
			for i := range 10 {
				e.publish(e.statusQ, fmt.Sprintf("status-%d", i), statusAhead(fmt.Sprintf("dev-%d", i)))
			}
			awaitPoisoned(t, s, 10)
			for i := range 20 {
				e.publish(e.telemetryQ, fmt.Sprintf("telemetry-%d", i), telemetryEmpty(fmt.Sprintf("dev-%d", i)))
			}
			awaitPoisoned(t, s, 20)
			e.stop(s) // the replayed messages stay on the handler's queue

			// left checks that the DLQ holds the dead letters want after a
			// command, and returns them in the store's order: a capped
			// command puts back in a quorum queue what it read, at the
			// queue's end.
			left := func(after string, want []string) []dlq.Letter {
				t.Helper()
				all := e.list()
				if got := messageIDs(all); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
					t.Fatalf("after %s the DLQ holds %v, want %v", after, got, want)
				}
				if store == "rabbitmq" {
					if n := e.queueDepth(e.poisonQ); n != len(want) {
						t.Fatalf("after %s the poison queue holds %d messages, want %d", after, n, len(want))
					}
				}
				return all
			}
			all := e.list()
			ids := messageIDs(all)
			if len(all) != 30 || byHandler(all)["device-status"] != 10 || !strings.HasPrefix(ids[9], "status-") {
				t.Fatalf("DLQ %v: want 10 status reports, then 20 telemetry messages", ids)
			}

			for _, c := range []struct {
				max     string
				n       int
				partial bool
			}{
				{"10", 10, true},
				{"29", 29, true},
				{"30", 30, false},
			} {
				code, out, stderr := e.dlqExit("list", "--json", "--max", c.max)
				var got []dlq.Letter
				if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil {
					t.Fatalf("list --max %s: exit %d, %v\n%s%s", c.max, code, err, out, stderr)
				}
				if want := messageIDs(all)[:c.n]; !slices.Equal(messageIDs(got), want) {
					t.Errorf("list --max %s: %v, want the first %d: %v", c.max, messageIDs(got), c.n, want)
				}
				note := "the list is partial: stopped at --max " + c.max
				if strings.Contains(stderr, note) != c.partial {
					t.Errorf("list --max %s: stderr %q; want the note %q: %v", c.max, stderr, note, c.partial)
				}
				all = left("list --max "+c.max, ids)
			}

			// show reads up to its letter: the first with --max 1. The
			// last one is past --max 10 on RabbitMQ (its messages are
			// read in order); PostgreSQL selects it by ID.
			if out := e.dlq("show", all[0].ID, "--max", "1"); !strings.Contains(out, all[0].MessageID) {
				t.Errorf("show %s --max 1:\n%s", all[0].ID, out)
			}
			all = left("show --max 1", ids)
			code, _, stderr := e.dlqExit("show", all[29].ID, "--max", "10")
			if want := fmt.Sprintf("dead letter %s not found: stopped at --max 10", all[29].ID); store == "rabbitmq" && (code != 1 || !strings.Contains(stderr, want)) {
				t.Errorf("show %s --max 10: exit %d, %q; want 1 and %q", all[29].ID, code, stderr, want)
			} else if store == "postgres" && code != 0 {
				t.Errorf("show %s --max 10: exit %d, %q", all[29].ID, code, stderr)
			}
			all = left("show --max 10", ids)

			// purge: on RabbitMQ the messages of the other handler count
			// against the bound too, and are put back.
			purged := firstSelected(store, all, 15, func(l dlq.Letter) bool { return l.Handler == "telemetry" })
			code, out, stderr := e.dlqExit("purge", "--handler", "telemetry", "--max", "15")
			if code != 1 || !strings.Contains(out, fmt.Sprintf("purged %d dead letters", len(purged))) || !strings.Contains(stderr, "stopped at --max 15") {
				t.Fatalf("purge --max 15: exit %d, %q, %q; want 1, purged %d and the bound", code, out, stderr, len(purged))
			}
			ids = without(ids, purged)
			all = left("purge --max 15", ids)

			replayed := firstSelected(store, all, 4, func(l dlq.Letter) bool { return strings.Contains(l.Reason, "clock_skew") })
			code, out, stderr = e.dlqExit("replay", "--reason", "clock_skew", "--max", "4")
			if code != 1 || !strings.Contains(out, fmt.Sprintf("replayed %d dead letters", len(replayed))) || !strings.Contains(stderr, "stopped at --max 4") {
				t.Fatalf("replay --max 4: exit %d, %q, %q; want 1, replayed %d and the bound", code, out, stderr, len(replayed))
			}
			if got := e.queueIDs(e.statusQ); !maps.Equal(got, replayed) {
				t.Fatalf("replay --max 4: the handler's queue holds %v, want %v", got, replayed)
			}
			ids = without(ids, replayed)
			left("replay --max 4", ids)

			if out := e.dlq("purge", "--all", "--max", strconv.Itoa(len(ids))); !strings.Contains(out, fmt.Sprintf("purged %d dead letters", len(ids))) {
				t.Fatalf("purge --all --max %d: %q", len(ids), out)
			}
			left("purge --all", nil)
			t.Logf("%s: purged %d and replayed %d under the bound", store, len(purged), len(replayed))
		})
	}
}

// TestDLQUsage: mistakes on the dlq command line, and a poison target
// that keeps nothing to read, are one clear line and exit status 2.
func TestDLQUsage(t *testing.T) {
	bin := hexmillBinary(t)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"dlq"}, 2, "no command; use list, show, replay or purge"},
		{[]string{"dlq", "frob"}, 2, `"frob" is not a dlq command`},
		{[]string{"dlq", "show"}, 2, "dlq show takes one ID"},
		{[]string{"dlq", "show", "1", "2"}, 2, "dlq show takes one ID"},
		{[]string{"dlq", "list", "7"}, 2, "dlq list takes no ID"},
		{[]string{"dlq", "replay"}, 2, "dlq replay: say what to replay"},
		{[]string{"dlq", "replay", "7", "--all"}, 2, "--all with an ID or a filter"},
		{[]string{"dlq", "purge"}, 2, "dlq purge: say what to purge"},
		{[]string{"dlq", "purge", "7"}, 2, "dlq purge takes no ID"},
		{[]string{"dlq", "list", "--older-than", "yesterday"}, 2, `invalid value "yesterday" for flag -older-than`},
		{[]string{"dlq", "list", "--older-than", "2h", "--newer-than", "1h"}, 2, "--older-than must be shorter than --newer-than"},
		{[]string{"dlq", "list", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"dlq", "list", "--max", "0"}, 2, "--max takes a positive number of dead letters"},
		{[]string{"dlq", "list"}, 2, "poison.transport is memory"},
		{[]string{"dlq", "--help"}, 0, "usage: <service> dlq <command>"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			cmd := exec.Command(bin, c.args...)
			cmd.Env = append(os.Environ(), "HEXMILL_CONFIG=", "HEXMILL_HTTP_ADDR=off")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if code := exitCode(err); code != c.code || !strings.Contains(out.String(), c.want) {
				t.Fatalf("exit %d, output %q; want exit %d and %q", code, out.String(), c.code, c.want)
			}
			if c.code != 0 && strings.Count(strings.TrimSpace(out.String()), "\n") != 0 {
				t.Errorf("more than one line: %q", out.String())
			}
		})
	}
}
