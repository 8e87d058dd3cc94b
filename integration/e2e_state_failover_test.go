package integration_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hexmill/hexmill/integration"
)

// PostgreSQL given as two hosts, the first one down (nothing listens on
// its port): the service starts, migrates and runs on the second (pgx
// tries the hosts in turn on every new connection).
func TestE2EStatePostgresFirstHostDown(t *testing.T) {
	e := newE2EEnv(t)
	u, err := url.Parse(integration.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = "127.0.0.1:" + strconv.Itoa(integration.FreePort(t)) + "," + u.Host
	q := u.Query()
	q.Set("target_session_attrs", "read-write")
	u.RawQuery = q.Encode()
	sc := e2eStatusScale(statusScale{Devices: 100, PerDevice: 4, DupShare: 0.1, Rate: 400},
		statusScale{Devices: 2000, PerDevice: 10, DupShare: 0.1, Rate: 2000})
	st := e.withState(u.String())
	plan := newStatusPlan(e.run, sc)
	ctx := e.stateContext(len(plan.sends))
	hexmillBinary(t) // built before the clock starts
	start := time.Now()
	svc := e.startService("r0")
	t.Logf("the service consumes %s after its start, with the first host down", time.Since(start).Round(time.Millisecond))
	sending, _ := sendStatus(t, ctx, e.mosquitto.Addr(), plan, 4, sc.Rate)
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

// A primary and a synchronous hot standby (pg_basebackup -R), the service
// given both hosts with target_session_attrs=read-write. The primary is
// killed mid-stream and the standby promoted, as a failover manager
// would: /readyz drops while no host takes writes and recovers on the
// promoted standby; handlers' transactions that find no primary are
// retried, then handed back to the broker, never poisoned; nothing
// committed is lost (the standby had every commit), and every change is
// published once.
func TestE2EStatePostgresFailover(t *testing.T) {
	e := newE2EEnv(t)
	primary := integration.StartPostgres(t)
	standby := primary.StartStandby(true)
	pgURL := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&target_session_attrs=read-write",
		primary.Port(), standby.Port())
	sc := e2eStatusScale(statusScale{Devices: 200, PerDevice: 8, DupShare: 0.1, Rate: 400},
		statusScale{Devices: 5000, PerDevice: 20, DupShare: 0.1, Rate: 2000})
	st := e.withState(pgURL)
	plan := newStatusPlan(e.run, sc)
	ctx := e.stateContext(len(plan.sends))
	svc := e.startService("r0")
	sending, sent := sendStatus(t, ctx, e.mosquitto.Addr(), plan, 4, sc.Rate)

	st.await(ctx, "a third handled", countProcessed, func(n int) bool { return n >= plan.unique/3 })
	killedAt, _ := st.count(ctx, countProcessed)
	start := time.Now()
	primary.Kill()
	down := awaitReadyz(t, ctx, svc, false)
	standby.Promote()
	promoted := time.Since(start)
	awaitReadyz(t, ctx, svc, true)
	up := time.Since(start)
	t.Logf("primary killed at %d of %d reports handled (%d sent): /readyz down after %s, standby promoted after %s, /readyz ready %s after the kill",
		killedAt, plan.unique, sent.Load(), down.Round(time.Millisecond), promoted.Round(time.Millisecond), up.Round(time.Millisecond))
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
	t.Logf("sent %d reports (%d distinct, %d sent twice); %d events; handed back to the broker: %d",
		len(plan.sends), plan.unique, plan.dups, f.events, svc.handedBack(t, "database_unavailable"))
	if n := e.poisoned(); n != 0 {
		t.Errorf("%d reports poisoned, want 0", n)
	}
	svc.requireReady(t)
}

// handedBack is messages_handed_back_total{reason} of the replica, from
// /metrics.
func (s *service) handedBack(t *testing.T, reason string) int {
	t.Helper()
	code, body, err := s.get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s: /metrics: %d %v", s.name, code, err)
	}
	n := 0
	for _, line := range strings.Split(body, "\n") {
		if !strings.Contains(line, "messages_handed_back_total{") || !strings.Contains(line, `reason="`+reason+`"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("%s: /metrics: %q: %v", s.name, line, err)
		}
		n += int(v)
	}
	return n
}
