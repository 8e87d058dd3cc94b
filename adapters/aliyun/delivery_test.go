package aliyun

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/integration"
)

const (
	telemetryFilter = "/+/+/thing/event/property/post"
	statusFilter    = "/as/mqtt/status/#"
)

func topicFor(i int) string {
	if i%10 == 0 {
		return fmt.Sprintf("/as/mqtt/status/pk%d/dev%d", i%7, i)
	}
	return fmt.Sprintf("/pk%d/dev%d/thing/event/property/post", i%7, i)
}

// eventually polls cond (for counters that have no event to wait on).
func eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		<-tick.C
	}
}

// 100 000 messages over two connections with explicit credit at 20 (where
// go-amqp's automatic credit stalls for good against RabbitMQ 3.10), fed
// to two subscriptions by topic filter: every message arrives.
func TestHundredThousandMessagesNoStall(t *testing.T) {
	addr := signingBroker(t)
	const n = 100_000
	queue := uniqueQueue("100k")
	cfg := testConfig(t, addr, queue)
	cfg.Credit = 20
	cfg.Connections = 2
	c := newConsumer(t, cfg)
	sub, err := c.Subscriber(SubscriberConfig{Handler: "both", Concurrency: 20})
	if err != nil {
		t.Fatal(err)
	}
	telemetry, err := sub.Subscribe(context.Background(), telemetryFilter)
	if err != nil {
		t.Fatal(err)
	}
	status, err := sub.Subscribe(context.Background(), statusFilter)
	if err != nil {
		t.Fatal(err)
	}
	// Four pushers (connections) with 8 senders each: the broker's
	// per-session work spreads over its schedulers.
	pushers := []*pusher{newPusher(t, addr), newPusher(t, addr), newPusher(t, addr), newPusher(t, addr)}
	ids := map[string]bool{}
	var idsMu sync.Mutex
	var pushWG sync.WaitGroup
	pushed := make(chan struct{})
	start := time.Now()
	for k, p := range pushers {
		pushWG.Add(1)
		go func() {
			defer pushWG.Done()
			part := pushMany(t, p, queue, n/len(pushers), 8, func(i int) string { return topicFor(i*len(pushers) + k) })
			idsMu.Lock()
			for id := range part {
				ids[id] = true
			}
			idsMu.Unlock()
		}()
	}
	go func() {
		pushWG.Wait()
		close(pushed)
		t.Logf("pushed %d in %s", n, time.Since(start))
	}()

	seen := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, out := range []<-chan *message.Message{telemetry, status} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range out {
				isStatus := strings.HasPrefix(m.Metadata.Get("topic"), "/as/mqtt/status/")
				if isStatus != (out == status) {
					t.Errorf("message on %s went to the wrong subscription", m.Metadata.Get("topic"))
				}
				m.Ack()
				mu.Lock()
				seen[m.UUID]++
				done := len(seen) == n
				mu.Unlock()
				if done {
					return
				}
			}
		}()
	}
	<-pushed
	eventually(t, "all 100 000 messages handled", 120*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == n
	})
	t.Logf("handled %d in %s; stats %+v", n, time.Since(start), c.Stats())
	_ = sub.Close()
	wg.Wait()
	for id := range ids {
		if seen[id] == 0 {
			t.Fatalf("message %s never arrived", id)
		}
	}
	if s := c.Stats(); s.Accepted < n {
		t.Fatalf("accepted %d of %d", s.Accepted, n)
	}
}

// A nacked message is released, not accepted, and comes back.
func TestNackRedelivers(t *testing.T) {
	addr := signingBroker(t)
	queue := uniqueQueue("nack")
	c := newConsumer(t, testConfig(t, addr, queue))
	sub, _ := c.Subscriber(SubscriberConfig{Concurrency: 1})
	out, err := sub.Subscribe(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	p := newPusher(t, addr)
	if err := p.push(queue, "/pk/dev/thing/event/property/post", "once", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	first := receive(t, out)
	first.Nack()
	again := receive(t, out)
	if again.UUID != "once" {
		t.Fatalf("got %s after the nack, want the same message back", again.UUID)
	}
	again.Ack()
	eventually(t, "accept counted", 5*time.Second, func() bool { return c.Stats().Accepted == 1 })
	if s := c.Stats(); s.Released < 1 {
		t.Fatalf("stats %+v: the nack was not a release", s)
	}
	_ = sub.Close()
}

// Cancelling the Subscribe context stops intake while delivered messages
// stay settleable; Close releases what is unsettled, and the next consumer
// of the group gets it.
func TestStopIntakeThenClose(t *testing.T) {
	addr := signingBroker(t)
	queue := uniqueQueue("stop")
	p := newPusher(t, addr)
	for _, id := range []string{"a", "b", "c"} {
		if err := p.push(queue, "/pk/dev/thing/event/property/post", id, []byte(id), nil); err != nil {
			t.Fatal(err)
		}
	}
	c := newConsumer(t, testConfig(t, addr, queue))
	sub, _ := c.Subscriber(SubscriberConfig{Concurrency: 2})
	ctx, stopIntake := context.WithCancel(context.Background())
	out, err := sub.Subscribe(ctx, telemetryFilter)
	if err != nil {
		t.Fatal(err)
	}
	first, second := receive(t, out), receive(t, out)
	stopIntake()
	for m := range out {
		t.Fatalf("delivered %s after intake stopped", m.UUID)
	}
	if first.Context().Err() != nil {
		t.Fatal("stopping intake cancelled a message in flight")
	}
	first.Ack()
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if second.Context().Err() == nil {
		t.Fatal("Close did not cancel the context of an unsettled message")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Accepted != 1 {
		t.Fatalf("stats %+v: want exactly the acked message accepted", s)
	}

	next := newConsumer(t, testConfig(t, addr, queue))
	nsub, _ := next.Subscriber(SubscriberConfig{Concurrency: 4})
	nout, err := nsub.Subscribe(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < 2 {
		m := receive(t, nout)
		got[m.UUID] = true
		m.Ack()
	}
	if got[first.UUID] || !got[second.UUID] {
		t.Fatalf("next consumer got %v; want the unsettled %s and the undelivered third, not the acked %s", got, second.UUID, first.UUID)
	}
	_ = nsub.Close()
}

// A message no subscription matches is held, then released (counted and
// logged), not lost: a subscription for its topic gets it. The most
// specific filter wins over the catch-all.
func TestUnmatchedReleasedAndDispatch(t *testing.T) {
	addr := signingBroker(t)
	queue := uniqueQueue("unmatched")
	c := newConsumer(t, testConfig(t, addr, queue))
	sub, _ := c.Subscriber(SubscriberConfig{Concurrency: 4})
	telemetry, err := sub.Subscribe(context.Background(), telemetryFilter)
	if err != nil {
		t.Fatal(err)
	}
	p := newPusher(t, addr)
	if err := p.push(queue, "/as/mqtt/status/pk/dev", "status-1", []byte(`{"status":"online"}`), nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "unmatched message released", 10*time.Second, func() bool { return c.Stats().Unmatched >= 1 })

	all, err := sub.Subscribe(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	m := receive(t, all)
	if m.UUID != "status-1" {
		t.Fatalf("catch-all got %s", m.UUID)
	}
	m.Ack()
	if err := p.push(queue, "/pk/dev/thing/event/property/post", "tele-1", []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, telemetry); m.UUID != "tele-1" {
		t.Fatalf("telemetry got %s", m.UUID)
	} else {
		m.Ack()
	}
	_ = sub.Close()
}

// A subscription whose handler holds its messages never stalls another
// on the same link: its backlog waits while the other's messages are
// handed out. Once both are behind the link stops reading (allAhead), and
// draining one makes it read again (catchUp): every message arrives, in
// order per subscription.
func TestBackloggedSubscriptionDoesNotStallAnother(t *testing.T) {
	addr := signingBroker(t)
	queue := uniqueQueue("backlog")
	cfg := testConfig(t, addr, queue)
	cfg.Credit = 20
	c := newConsumer(t, cfg)
	sub, err := c.Subscriber(SubscriberConfig{Handler: "backlog", Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	telemetry, err := sub.Subscribe(context.Background(), telemetryFilter)
	if err != nil {
		t.Fatal(err)
	}
	status, err := sub.Subscribe(context.Background(), statusFilter)
	if err != nil {
		t.Fatal(err)
	}
	p := newPusher(t, addr)
	push := func(topic, id string) {
		t.Helper()
		if err := p.push(queue, topic, id, []byte(`{}`), nil); err != nil {
			t.Fatal(err)
		}
	}
	// expect takes the next message of out, which must be id, and acks it.
	expect := func(out <-chan *message.Message, id string) {
		t.Helper()
		m := receive(t, out)
		if m.UUID != id {
			t.Fatalf("got %s, want %s", m.UUID, id)
		}
		m.Ack()
	}

	// Telemetry is not read: its backlog grows, and status messages
	// still arrive one by one.
	for i := range 8 {
		push(fmt.Sprintf("/pk/dev%d/thing/event/property/post", i), fmt.Sprintf("tele-%d", i))
	}
	eventually(t, "telemetry backlog received", 10*time.Second, func() bool { return c.Stats().Received >= 8 })
	for i := range 3 {
		push("/as/mqtt/status/pk/dev", fmt.Sprintf("status-%d", i))
		expect(status, fmt.Sprintf("status-%d", i))
	}

	// Now status falls behind too, and more comes in: draining status
	// hands out every message.
	for i := 3; i < 11; i++ {
		push("/as/mqtt/status/pk/dev", fmt.Sprintf("status-%d", i))
	}
	// Status is behind as soon as one message waits for the pump and
	// handAhead are queued: from there the link may leave the rest in
	// go-amqp's buffer until a route falls behind.
	eventually(t, "status backlog received", 10*time.Second, func() bool { return c.Stats().Received >= 8+3+1+handAhead })
	for i := 11; i < 30; i++ {
		push("/as/mqtt/status/pk/dev", fmt.Sprintf("status-%d", i))
	}
	for i := 3; i < 30; i++ {
		expect(status, fmt.Sprintf("status-%d", i))
	}
	for i := range 8 {
		expect(telemetry, fmt.Sprintf("tele-%d", i))
	}
	eventually(t, "all accepted", 10*time.Second, func() bool { return c.Stats().Accepted == 8+30 })
}

// The connection is cut mid-stream under load: the adapter reconnects with
// a fresh signature and every message is handled at least once.
func TestProxyCutUnderLoad(t *testing.T) {
	addr := signingBroker(t)
	const n = 20_000
	proxy := integration.NewProxy(t, addr)
	queue := uniqueQueue("cut")
	cfg := testConfig(t, proxy.Addr(), queue)
	cfg.Credit = 100
	c := newConsumer(t, cfg)
	sub, _ := c.Subscriber(SubscriberConfig{Concurrency: 64})
	out, err := sub.Subscribe(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	p := newPusher(t, addr)
	var ids map[string]bool
	pushed := make(chan struct{})
	go func() {
		defer close(pushed)
		ids = pushMany(t, p, queue, n, 16, topicFor)
	}()
	seen := map[string]int{}
	cuts := 0
	deadline := time.NewTimer(120 * time.Second)
	defer deadline.Stop()
	for len(seen) < n {
		select {
		case m := <-out:
			seen[m.UUID]++
			m.Ack()
			if len(seen) == n/4 || len(seen) == n/2 {
				if seen[m.UUID] == 1 {
					proxy.Cut()
					cuts++
				}
			}
		case <-deadline.C:
			t.Fatalf("%d of %d messages handled after 120s (stats %+v)", len(seen), n, c.Stats())
		}
	}
	<-pushed
	for id := range ids {
		if seen[id] == 0 {
			t.Fatalf("message %s lost", id)
		}
	}
	s := c.Stats()
	if s.Reconnects < 1 || cuts == 0 {
		t.Fatalf("stats %+v after %d cuts: no reconnect", s, cuts)
	}
	users := verifier.allowedFor(cfg.clientID(0))
	if len(users) < 2 {
		t.Fatalf("broker saw %d logins for %s; want a fresh one after the cut", len(users), cfg.clientID(0))
	}
	distinct := map[string]bool{}
	for _, u := range users {
		distinct[u] = true
	}
	if len(distinct) != len(users) {
		t.Fatalf("a signature was reused across reconnects: %v", users)
	}
	eventually(t, "ready after the cuts", 10*time.Second, func() bool { return c.Ready() == nil })
	_ = sub.Close()
}

// Connection attempts of all connections together stay within the
// per-minute cap, however fast the broker drops them, and each failed
// attempt is reported (a broker that closes the socket at once).
func TestReconnectAttemptsCapped(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	attempts := make(chan struct{}, 100)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
			attempts <- struct{}{}
		}
	}()
	defer func() { _ = l.Close(); wg.Wait() }()

	cfg := testConfig(t, l.Addr().String(), "unused")
	cfg.Connections = 3
	cfg.Reconnect.InitialInterval = time.Millisecond
	cfg.Reconnect.MaxInterval = 2 * time.Millisecond
	cfg.Reconnect.MaxAttemptsPerMinute = 5
	cfg.StartTimeout = 300 * time.Millisecond
	c := newConsumer(t, cfg)
	if err := c.Open(context.Background()); err == nil {
		t.Fatal("Start succeeded against a broker that drops every connection")
	}
	for i := range 5 {
		select {
		case <-attempts:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d attempts", i)
		}
	}
	// No event marks an attempt that does not happen: watch for a while.
	select {
	case <-attempts:
		t.Fatal("a 6th attempt within the minute")
	case <-time.After(300 * time.Millisecond):
	}
	if err := c.Ready(); err == nil {
		t.Fatal("Ready with no connection up")
	}
}

// A link silent for stall_timeout with credit outstanding is resynchronised
// with a drain (against RabbitMQ's answer) and keeps receiving.
// idleLink starts a consumer with a 50 ms stall timeout on an empty queue
// and subscribes to every topic; the subscription closes with the test.
func idleLink(t *testing.T, addr, queue string, credit int) (*Transport, <-chan *message.Message) {
	t.Helper()
	cfg := testConfig(t, addr, queue)
	if credit > 0 {
		cfg.Credit = credit
	}
	cfg.StallTimeout = 50 * time.Millisecond
	c := newConsumer(t, cfg)
	sub, _ := c.Subscriber(SubscriberConfig{Concurrency: 4})
	out, err := sub.Subscribe(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return c, out
}

func TestIdleLinkResync(t *testing.T) {
	addr := signingBroker(t)
	queue := uniqueQueue("idle")
	c, out := idleLink(t, addr, queue, 0)
	eventually(t, "a resync of the idle link", 10*time.Second, func() bool { return c.Stats().Resyncs >= 2 })
	p := newPusher(t, addr)
	for i := range 3 {
		if err := p.push(queue, "/pk/dev/thing/event/property/post", fmt.Sprint("idle-", i), []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
		m := receive(t, out)
		m.Ack()
	}
	if err := c.Ready(); err != nil {
		t.Fatalf("not ready after resyncs: %v", err)
	}
}

// A trickle of messages, one after each silence, does not keep topping up
// an idle link's credit: the top-ups count until refill issues credit
// again, not until the next message, so the credit outstanding stays
// within (1 + maxTopUps) × Credit and the link is drained (against
// RabbitMQ 3.10: reconnected) instead. Counting top-ups from the last
// message let the credit grow by Credit per silence here, and let a link
// whose broker believed in less credit than go-amqp crawl at Credit
// messages per StallTimeout for good (make bench, credit 20: ~10 msg/s).
func TestTrickleKeepsCreditBounded(t *testing.T) {
	addr := signingBroker(t)
	queue := uniqueQueue("trickle")
	const credit = 4
	c, out := idleLink(t, addr, queue, credit)
	p := newPusher(t, addr)
	bound := (1 + maxTopUps) * credit
	most := 0
	for i := range 12 {
		before := c.Stats().Resyncs
		eventually(t, "a silence", 10*time.Second, func() bool { return c.Stats().Resyncs > before })
		if err := p.push(queue, "/pk/dev/thing/event/property/post", fmt.Sprint("trickle-", i), []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
		m := receive(t, out)
		m.Ack()
		if l := c.conns[0].current(); l != nil {
			l.mu.Lock()
			most = max(most, l.outstanding+l.waiting)
			l.mu.Unlock()
		}
	}
	t.Logf("credit outstanding at most %d (bound %d); stats %+v", most, bound, c.Stats())
	if most > bound {
		t.Fatalf("credit outstanding reached %d, want at most (1 + maxTopUps) × Credit = %d", most, bound)
	}
}
