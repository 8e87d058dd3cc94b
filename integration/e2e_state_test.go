package integration_test

// End-to-end proofs of state that survives and scales (issue 17,
// docs/state.md), on the real binary:
//
//	status reports (MQTT v5 QoS 1 to a private mosquitto, each with its
//	message ID; random order across and within devices; some sent twice)
//	  -> testservice replicas ($share group), device-status bound idempotently
//	  -> device_status, hexmill_processed_messages, hexmill_outbox (PostgreSQL,
//	     a schema of the test's own)
//	  -> the outbox relay -> DeviceStatusChanged -> RabbitMQ -> the test's sink
//
// Each test ends with verify: every device's row is its newest report, and
// its events are its status changes, each once and in order. Copies of one
// event (same UUID), which a relay killed between publishing and deleting
// its rows sends again, are counted apart: at least once on the wire, and
// consumers dedup by UUID.

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/hexmill/hexmill/integration"
)

// Three replicas in one $share group, transport-level duplicates, and the
// replica whose relay is active SIGKILLed mid-stream (its session keeps
// its share of the group until it is restarted under its client IDs;
// another replica's relay takes over the outbox meanwhile).
func TestE2EStateReplicasKillDuplicates(t *testing.T) {
	e := newE2EEnv(t)
	sc := e2eStatusScale(statusScale{Devices: 300, PerDevice: 8, DupShare: 0.1, Rate: 600},
		statusScale{Devices: 5000, PerDevice: 20, DupShare: 0.1, Rate: 3000})
	st := e.withState(integration.PostgresURL(t))
	plan := newStatusPlan(e.run, sc)
	ctx := e.stateContext(len(plan.sends))
	replicas := []*service{e.startService("r0"), e.startService("r1"), e.startService("r2")}
	holder := relayHolder(t, ctx, replicas)
	sending, sent := sendStatus(t, ctx, e.mosquitto.Addr(), plan, 4, sc.Rate)

	st.await(ctx, "a third handled", countProcessed, func(n int) bool { return n >= plan.unique/3 })
	var survivors []*service
	for _, r := range replicas {
		if r.handledBy(t, "device-status") == 0 {
			t.Errorf("replica %s handled no report: the group does not spread the work", r.name)
		}
		if r != holder {
			survivors = append(survivors, r)
		}
	}
	holder.kill(t)
	killedAt, _ := st.count(ctx, countProcessed)
	t.Logf("%s (the active relay) SIGKILLed at %d of %d reports handled, %d sent", holder.name, killedAt, plan.unique, sent.Load())
	next := relayHolder(t, ctx, survivors)
	// The killed replica's session keeps its share of what is still to
	// come, and what it held, until it is restarted: the survivors can
	// reach about two thirds of what was left at the kill, which on a busy
	// machine (a late kill) can be less than a sixth of the whole.
	goOn := min(plan.unique/6, (plan.unique-killedAt)/3)
	st.await(ctx, "the group goes on", countProcessed, func(n int) bool { return n >= killedAt+goOn })
	t.Logf("%s's relay took over; the group went on; restarting %s", next.name, holder.name)
	for i, r := range replicas {
		if r == holder {
			replicas[i] = e.startService(r.name)
		}
	}
	select {
	case err := <-sending:
		if err != nil {
			t.Fatalf("generator: %v (%d acknowledged)", err, sent.Load())
		}
	case <-ctx.Done():
		t.Fatal("generator did not finish")
	}
	st.awaitSettled(ctx, plan)
	f := st.verify(ctx, plan)
	t.Logf("sent %d reports (%d distinct, %d sent twice) for %d devices; %d events", len(plan.sends), plan.unique, plan.dups, sc.Devices, f.events)
	for _, r := range replicas {
		r.requireReady(t)
		t.Logf("%s handled %d (since its start)", r.name, r.handledBy(t, "device-status"))
	}
	if n := e.poisoned(); n != 0 {
		t.Errorf("%d reports poisoned", n)
	}
}

// SIGKILL between the commit and the relay's publish: the service's
// connection to RabbitMQ is cut (through a proxy the test owns) so that
// the relay cannot publish; changes committed meanwhile wait in the
// outbox; the service is SIGKILLed, the connection restored, the service
// restarted: each of those events arrives, once.
func TestE2EStateKillBeforeRelay(t *testing.T) {
	e := newE2EEnv(t)
	proxy := integration.NewProxy(t, e.rabbitAddr)
	e.rabbitAddr = proxy.Addr()
	sc := e2eStatusScale(statusScale{Devices: 200, PerDevice: 2, Alternate: true}, statusScale{Devices: 5000, PerDevice: 2, Alternate: true})
	st := e.withState(integration.PostgresURL(t))
	plan := newStatusPlan(e.run, sc)
	// First every device's first report, then its second one: a change.
	first, second := &statusPlan{run: plan.run + "a"}, &statusPlan{run: plan.run + "b"}
	for _, r := range plan.sends {
		if r.at.Equal(plan.newest[r.device].at) {
			second.sends = append(second.sends, r)
		} else {
			first.sends = append(first.sends, r)
		}
	}
	ctx := e.stateContext(len(plan.sends))
	svc := e.startService("r0")

	sending, _ := sendStatus(t, ctx, e.mosquitto.Addr(), first, 4, 0)
	if err := <-sending; err != nil {
		t.Fatal(err)
	}
	st.await(ctx, "first reports handled", countProcessed, func(n int) bool { return n == len(first.sends) })
	st.await(ctx, "outbox empty", countOutbox, func(n int) bool { return n == 0 })
	if err := st.sink.awaitUnique(ctx, len(first.sends)); err != nil {
		t.Fatal(err)
	}

	proxy.Refuse(true)
	proxy.Cut()
	sending, _ = sendStatus(t, ctx, e.mosquitto.Addr(), second, 4, 0)
	if err := <-sending; err != nil {
		t.Fatal(err)
	}
	st.await(ctx, "second reports handled", countProcessed, func(n int) bool { return n == len(plan.sends) })
	waiting := st.await(ctx, "outbox holds the changes", countOutbox, func(n int) bool { return n == len(second.sends) })
	if got := st.sink.unique(); got != len(first.sends) {
		t.Fatalf("%d events arrived with RabbitMQ cut off, want the %d of before", got, len(first.sends))
	}
	svc.kill(t)
	t.Logf("SIGKILL with %d events committed in the outbox and not published", waiting)
	proxy.Refuse(false)
	start := time.Now()
	svc = e.startService("r0")
	if err := st.sink.awaitUnique(ctx, len(plan.sends)); err != nil {
		t.Fatal(err)
	}
	t.Logf("the restarted service published them %s after its start", time.Since(start).Round(time.Millisecond))
	st.awaitSettled(ctx, plan)
	f := st.verify(ctx, plan)
	if f.redelivered != 0 {
		t.Errorf("%d events arrived twice (same UUID), want each once", f.redelivered)
	}
	svc.requireReady(t)
}

// The service's PostgreSQL (a private instance) killed and restarted
// mid-stream: /readyz drops while it is down and recovers; handlers'
// transactions fail and are retried (the retry outlasts the restart);
// nothing is lost or poisoned, and every change is published once.
func TestE2EStatePostgresRestart(t *testing.T) {
	e := newE2EEnv(t)
	pg := integration.StartPostgres(t)
	sc := e2eStatusScale(statusScale{Devices: 200, PerDevice: 8, DupShare: 0.1, Rate: 400},
		statusScale{Devices: 5000, PerDevice: 20, DupShare: 0.1, Rate: 2000})
	st := e.withState(pg.URL())
	plan := newStatusPlan(e.run, sc)
	ctx := e.stateContext(len(plan.sends))
	// The default retries: a message that finds the database down is
	// handed back to the broker, not poisoned, however long the outage.
	svc := e.startService("r0")
	sending, sent := sendStatus(t, ctx, e.mosquitto.Addr(), plan, 4, sc.Rate)

	st.await(ctx, "a third handled", countProcessed, func(n int) bool { return n >= plan.unique/3 })
	killedAt, _ := st.count(ctx, countProcessed)
	start := time.Now()
	pg.Kill()
	down := awaitReadyz(t, ctx, svc, false)
	pg.Start()
	restarted := time.Since(start)
	awaitReadyz(t, ctx, svc, true)
	up := time.Since(start)
	t.Logf("PostgreSQL killed at %d of %d reports handled (%d sent): /readyz down after %s, PostgreSQL up again after %s, /readyz ready %s after the kill",
		killedAt, plan.unique, sent.Load(), down.Round(time.Millisecond), restarted.Round(time.Millisecond), up.Round(time.Millisecond))
	select {
	case err := <-sending:
		if err != nil {
			t.Fatalf("generator: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("generator did not finish")
	}
	st.awaitSettled(ctx, plan)
	f := st.verify(ctx, plan)
	t.Logf("sent %d reports (%d distinct, %d sent twice); %d events", len(plan.sends), plan.unique, plan.dups, f.events)
	if n := e.poisoned(); n != 0 {
		t.Errorf("%d reports poisoned, want 0", n)
	}
	svc.requireReady(t)
}

// awaitReadyz polls /readyz every 10 ms until it says ready (or not) and
// returns how long that took.
func awaitReadyz(t *testing.T, ctx context.Context, s *service, ready bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		code, _, err := s.get("/readyz")
		if (err == nil && code == http.StatusOK) == ready {
			return time.Since(start)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%s: /readyz never became ready=%v", s.name, ready)
		}
	}
}

// e2eStatusScale is the CI size, or the full size (see e2eScale).
func e2eStatusScale(ci, full statusScale) statusScale {
	if *e2eFull || os.Getenv(EnvE2EFull) == "1" {
		return full
	}
	return ci
}

// stateContext is the context a state test of n reports runs in, ended
// with the test.
func (e *e2eEnv) stateContext(n int) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute+time.Duration(n)*time.Millisecond)
	e.t.Cleanup(cancel)
	return ctx
}
