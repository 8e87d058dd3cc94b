package app_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/adapters/rabbitmq"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/ports"
)

// attempts records, per message payload, when each handler attempt began.
type attempts struct {
	mu    sync.Mutex
	at    map[string][]time.Time
	bulk  int
	event chan struct{} // a send per attempt
}

func newAttempts() *attempts {
	return &attempts{at: map[string][]time.Time{}, event: make(chan struct{}, 10000)}
}

// handle fails "flaky-*" twice then succeeds, fails "doomed-*" always, and
// handles "bulk-*" in 5ms.
func (a *attempts) handle(_ context.Context, msg ports.Message) error {
	p := string(msg.Payload)
	a.mu.Lock()
	a.at[p] = append(a.at[p], time.Now())
	n := len(a.at[p])
	if strings.HasPrefix(p, "bulk-") {
		a.bulk++
	}
	a.mu.Unlock()
	defer func() { a.event <- struct{}{} }()
	switch {
	case strings.HasPrefix(p, "flaky-") && n < 3:
		return fmt.Errorf("flaky attempt %d", n)
	case strings.HasPrefix(p, "doomed-"):
		return fmt.Errorf("doomed attempt %d", n)
	case strings.HasPrefix(p, "bulk-"):
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// await waits, bounded generously, until cond holds.
func (a *attempts) await(t *testing.T, what string, cond func(a *attempts) bool) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		a.mu.Lock()
		ok := cond(a)
		a.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-a.event:
		case <-deadline:
			t.Fatalf("timed out after 60s waiting for %s", what)
		}
	}
}

func (a *attempts) times(p string) []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Time(nil), a.at[p]...)
}

// delayedApp is one run of the test service on conf: handler "work".
func delayedApp(t *testing.T, conf string, a *attempts) *fx.App {
	t.Helper()
	path := filepath.Join(t.TempDir(), "service.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := app.Service{Name: "hxdelay", Options: []fx.Option{app.AsHandler(func() ports.Handler {
		return ports.HandlerFunc{HandlerName: "work", Func: a.handle}
	})}}
	fa := app.New(svc, app.Env{config.EnvConfigFile(svc.Name): path}, fx.NopLogger)
	if err := fa.Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := fa.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return fa
}

// Delayed retries on RabbitMQ (delay queues) and on MQTT with the
// PostgreSQL store. With retry.delayed [d1, d2] and no in-process retry,
// a handler that fails twice then succeeds sees its attempts near +0,
// +d1, +d1+d2; a message that always fails is poisoned after its third
// delivery with every delivery's reason. Meanwhile other messages flow:
// the failing messages outnumber the workers, and on MQTT the
// receive_maximum (the broker sends no more unacked messages, and acks go
// out in arrival order), so a retry that held its worker or its ack for
// the delay would stall them.
//
// Tolerances: an attempt never comes before its delay (the park happens
// after the failed attempt, and the broker's or the database's clock
// starts then; 50ms is allowed for clock granularity), and at most
// lateBy after it: the store's poll interval (100ms here), the time to
// hand the message over, and a busy machine's scheduling. The flow is
// asserted as a rate: bulk messages handled while the failing ones wait
// must go at least floorRatio times the rate measured just before with
// no failures (workers held for d1 cut it to about 0.1, as a
// check with the park replaced by a sleep showed).
//
// A restart (graceful stop, new process state) while every failing
// message is parked still delivers each of them: they are on the broker
// or in the table, not in the process.
func TestDelayedRetriesE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("needs brokers")
	}
	const (
		d1, d2     = 2 * time.Second, 2500 * time.Millisecond
		lateBy     = 3 * time.Second
		early      = 50 * time.Millisecond
		floorRatio = 0.35
		bulk       = 100
		workers    = 4
	)
	for _, source := range []string{"rabbitmq", "mqtt"} {
		t.Run(source, func(t *testing.T) {
			mqttURL, amqpURL := integration.MQTTURL(t), integration.RabbitMQURL(t)
			ch := integration.RabbitMQChannel(t, amqpURL)
			run := strings.ToLower(watermill.NewShortUUID())
			in, poison := "hx-dl-"+run+"-in", "hx-dl-"+run+"-poison"
			t.Cleanup(func() {
				for _, q := range []string{in, poison, rabbitmq.DelayQueueName(in, d1), rabbitmq.DelayQueueName(in, d2)} {
					_, _ = ch.QueueDelete(q, false, false, false)
				}
			})
			topic := "hx-dl/" + run + "/in"
			handler := fmt.Sprintf("{transport: rabbitmq, topic: %s, concurrency: %d}", in, workers)
			store := ""
			if source == "mqtt" {
				handler = fmt.Sprintf("{transport: mqtt, topic: %s, group: g, concurrency: %d}", topic, workers)
				schema := pgSchema(t)
				t.Cleanup(func() { dropPGSchema(t, schema) })
				store = fmt.Sprintf("postgres: {url: %q, schema: %s}\n", integration.PostgresURL(t), schema)
			}
			conf := fmt.Sprintf(`service: hx-dl-%[1]s
http_addr: "off"
drain_timeout: 5s
retry: {max_retries: 0, initial_interval: 10ms, max_interval: 1s, multiplier: 2, delayed: [%[6]s, %[7]s], delay_store: %[8]s, delay_poll_interval: 100ms}
poison: {transport: rabbitmq, topic: %[5]s}
transports:
  mqtt: {servers: [%[2]s], client_id: "hx-dl-%[1]s-{conn}-{n}", receive_maximum: %[11]d}
  rabbitmq:
    url: %[3]s
    queues: [{name: %[4]s, type: classic}, {name: %[5]s, type: classic}]
handlers:
  work: %[9]s
%[10]s`, run, mqttURL, amqpURL, in, poison, d1, d2, map[bool]string{true: "postgres", false: `""`}[store != ""], handler, store, workers)

			a := newAttempts()
			fa := delayedApp(t, conf, a)
			defer func() { _ = fa.Stop(context.Background()) }()
			send := sender(t, source, ch, in, mqttURL, topic)

			sendBulk := func(from int) time.Duration {
				start := time.Now()
				for i := from; i < from+bulk; i++ {
					send("bulk-" + strconv.Itoa(i))
				}
				a.await(t, "the bulk messages", func(a *attempts) bool { return a.bulk >= from+bulk })
				return time.Since(start)
			}
			baseline := sendBulk(0)

			failing := []string{"doomed-1"}
			for i := range workers {
				failing = append(failing, "flaky-"+strconv.Itoa(i))
			}
			for _, p := range failing {
				send(p)
			}
			during := sendBulk(bulk)
			a.await(t, "the first attempts", func(a *attempts) bool {
				for _, p := range failing {
					if len(a.at[p]) < 1 {
						return false
					}
				}
				return true
			})
			ratio := baseline.Seconds() / during.Seconds()
			t.Logf("%d bulk messages: %s before, %s while %d messages wait for their delayed retry (rate ratio %.2f)", bulk, baseline, during, len(failing), ratio)
			if ratio < floorRatio {
				t.Errorf("bulk rate while messages wait is %.2f of the baseline; want at least %.2f (a waiting retry must not hold its worker)", ratio, floorRatio)
			}

			// Restart while the failing messages are parked (d1 has not
			// passed).
			if err := fa.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, p := range failing {
				if n := len(a.times(p)); n != 1 {
					t.Fatalf("%s had %d attempts when the service stopped; want 1 (the restart must fall in the first delay)", p, n)
				}
			}
			fa = delayedApp(t, conf, a)

			a.await(t, "the flaky messages' third attempts", func(a *attempts) bool {
				for _, p := range failing[1:] {
					if len(a.at[p]) < 3 {
						return false
					}
				}
				return true
			})
			for _, p := range failing[1:] {
				at := a.times(p)
				if len(at) != 3 {
					t.Errorf("%s: %d attempts; want 3 (it succeeds on the third)", p, len(at))
					continue
				}
				for i, d := range []time.Duration{d1, d2} {
					gap := at[i+1].Sub(at[i])
					if gap < d-early || gap > d+lateBy {
						t.Errorf("%s: attempt %d came %s after attempt %d; want %s to %s", p, i+2, gap, i+1, d, d+lateBy)
					}
				}
				t.Logf("%s: attempts at +0, +%s, +%s", p, at[1].Sub(at[0]).Round(time.Millisecond), at[2].Sub(at[0]).Round(time.Millisecond))
			}

			dead := consumeOne(t, ch, poison)
			if string(dead.Body) != "doomed-1" {
				t.Fatalf("poisoned %q; want doomed-1", dead.Body)
			}
			reason, _ := dead.Headers["reason_poisoned"].(string)
			for n := 1; n <= 3; n++ {
				if want := fmt.Sprintf("%d: doomed attempt %d", n, n); !strings.Contains(reason, want) {
					t.Errorf("poison reason %q; want every delivery's reason, e.g. %q", reason, want)
				}
			}
			if got := dead.Headers["delivery_attempt"]; got != "3" {
				t.Errorf("poisoned with delivery_attempt %v; want 3", got)
			}
			if n := len(a.times("doomed-1")); n != 3 {
				t.Errorf("doomed-1 handled %d times; want 3 (one per delivery)", n)
			}
			if err := fa.Stop(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
}

// sender returns a function that sends one message to the handler's
// source: a RabbitMQ queue, or an MQTT topic over one connection.
func sender(t *testing.T, source string, ch *amqp.Channel, queue, mqttURL, topic string) func(payload string) {
	t.Helper()
	if source == "rabbitmq" {
		return func(payload string) {
			if err := ch.Publish("", queue, false, false, amqp.Publishing{Body: []byte(payload), MessageId: watermill.NewUUID(), DeliveryMode: amqp.Persistent}); err != nil {
				t.Fatal(err)
			}
		}
	}
	u, err := url.Parse(mqttURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cm, err := autopaho.NewConnection(context.Background(), autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		ClientConfig: paho.ClientConfig{ClientID: "hx-dl-pub-" + watermill.NewShortUUID()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cm.Disconnect(context.Background()) })
	if err := cm.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	return func(payload string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)}); err != nil {
			t.Fatal(errors.New("publish: " + err.Error()))
		}
	}
}

// On the memory transport with the PostgreSQL store, a stop while a
// parked message is being handled again ends by the drain timeout (the
// handler's context ends), and the message stays in the store for the
// next start, which handles it.
func TestDelayedRetriesStopKeepsTheParkedMessage(t *testing.T) {
	const drain = time.Second
	e, schema := pgEnv(t, integration.PostgresURL(t), false)
	e["PGTEST_RETRY_MAX_RETRIES"] = "0"
	e["PGTEST_RETRY_DELAYED"] = "200ms,200ms"
	e["PGTEST_RETRY_DELAY_STORE"] = "postgres"
	e["PGTEST_RETRY_DELAY_POLL_INTERVAL"] = "50ms"
	e["PGTEST_DRAIN_TIMEOUT"] = drain.String()
	var mu sync.Mutex
	calls := 0
	hung, handled := make(chan struct{}), make(chan ports.Message, 1)
	handle := func(ctx context.Context, _ ports.Publisher, _ *postgres.DB, msg ports.Message) error {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		switch n {
		case 1:
			return errors.New("first delivery fails")
		case 2: // the parked message, back: hangs until stop gives up
			close(hung)
			<-ctx.Done()
			return ctx.Err()
		}
		handled <- msg
		return nil
	}
	s := startService(t, pgService(handle), e)
	publish(t, s.broker, inTopic, "m-1", "item")
	select {
	case <-hung:
	case <-time.After(30 * time.Second):
		t.Fatal("the parked message did not come back within 30s")
	}
	begin := time.Now()
	s.stop(t)
	if took := time.Since(begin); took > drain+10*time.Second {
		t.Errorf("stop took %s; want about the drain timeout %s", took, drain)
	}
	db := openDB(t, schema)
	if n := countRows(t, db, `SELECT count(*) FROM hexmill_delayed_messages`); n != 1 {
		t.Fatalf("%d parked messages after the stop; want the one cut short", n)
	}
	startService(t, pgService(handle), e)
	select {
	case msg := <-handled:
		if msg.Metadata.ID != "m-1" || msg.Metadata.Attributes["delivery_attempt"] != "2" {
			t.Errorf("handled %s with delivery_attempt %q; want m-1 on its 2nd delivery", msg.Metadata.ID, msg.Metadata.Attributes["delivery_attempt"])
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the parked message was not handled after the restart")
	}
}
