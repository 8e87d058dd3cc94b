package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/integration"
)

// A poison message is retried by the router, then published with its
// failure reason to the dead-letter exchange (the poison target), and the
// messages behind it are processed. The work queue carries the DLX and a
// delivery limit as the broker's backstop.
func TestPoisonMessageEndsInDeadLetterQueue(t *testing.T) {
	work, dlx, workQ, dlq := uniqueName("work"), uniqueName("dlx"), uniqueName("work"), uniqueName("dlq")
	newAdmin(t).cleanup([]string{workQ, dlq}, []string{work, dlx})
	c := newClient(t, rabbitmq.Config{
		Exchanges: []rabbitmq.ExchangeConfig{{Name: work, Type: rabbitmq.ExchangeDirect}, {Name: dlx, Type: rabbitmq.ExchangeFanout}},
		Queues: []rabbitmq.QueueConfig{
			{Name: workQ, Type: rabbitmq.QueueQuorum, DeadLetterExchange: dlx, DeliveryLimit: 5},
			{Name: dlq, Type: rabbitmq.QueueQuorum},
		},
		Bindings: []rabbitmq.BindingConfig{{Exchange: work, Queue: workQ, RoutingKey: "telemetry"}, {Exchange: dlx, Queue: dlq}},
	})
	pub, err := c.Publisher(map[string]string{"exchange": work})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	poisonPub, err := c.Publisher(map[string]string{"exchange": dlx})
	if err != nil {
		t.Fatal(err)
	}
	defer poisonPub.Close()
	sub, err := c.Subscriber(rabbitmq.SubscriberConfig{Handler: "telemetry", Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}

	const good = 10
	processed := make(chan string, good)
	var attempts sync.Map
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	poison, err := middleware.PoisonQueue(poisonPub, "poison")
	if err != nil {
		t.Fatal(err)
	}
	router.AddMiddleware(poison, middleware.Retry{MaxRetries: 2, InitialInterval: time.Millisecond, Logger: watermill.NopLogger{}}.Middleware)
	router.AddConsumerHandler("telemetry", workQ, sub, func(msg *message.Message) error {
		n, _ := attempts.LoadOrStore(msg.UUID, new(int))
		*n.(*int)++
		if string(msg.Payload) == "poison" {
			return errors.New("cannot parse telemetry: bad payload")
		}
		processed <- msg.UUID
		return nil
	})
	runDone := make(chan error, 1)
	go func() { runDone <- router.Run(context.Background()) }()
	defer func() {
		_ = router.Close()
		<-runDone
		_ = sub.Close()
	}()
	<-router.Running()

	bad := message.NewMessage(watermill.NewUUID(), []byte("poison"))
	if err := pub.Publish("telemetry", bad); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for i := range good {
		m := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, "reading %d", i))
		want[m.UUID] = true
		if err := pub.Publish("telemetry", m); err != nil {
			t.Fatal(err)
		}
	}
	for range good {
		select {
		case id := <-processed:
			delete(want, id)
		case <-time.After(20 * time.Second):
			t.Fatalf("messages behind the poison message not processed: %d left", len(want))
		}
	}
	if len(want) != 0 {
		t.Fatalf("unexpected messages processed; still missing %v", want)
	}

	d := newAdmin(t).get(dlq, 10*time.Second)
	if d.MessageId != bad.UUID {
		t.Fatalf("dead-letter queue holds %q; want the poison message %q", d.MessageId, bad.UUID)
	}
	reason, _ := d.Headers[middleware.ReasonForPoisonedKey].(string)
	if !strings.Contains(reason, "cannot parse telemetry") {
		t.Fatalf("reason header %q = %q; want the handler's error", middleware.ReasonForPoisonedKey, reason)
	}
	if n, _ := attempts.Load(bad.UUID); *n.(*int) != 3 {
		t.Fatalf("poison message handled %d times; want 1 + 2 retries", *n.(*int))
	}
}

// Publishing errors are reported to the caller, and the publisher keeps
// working after them.
func TestPublishErrors(t *testing.T) {
	exchange, queue := uniqueName("routes"), uniqueName("routed")
	newAdmin(t).cleanup([]string{queue}, []string{exchange})
	c := newClient(t, rabbitmq.Config{
		Exchanges: []rabbitmq.ExchangeConfig{{Name: exchange, Type: rabbitmq.ExchangeDirect}},
		Queues:    []rabbitmq.QueueConfig{{Name: queue, Type: rabbitmq.QueueClassic}},
		Bindings:  []rabbitmq.BindingConfig{{Exchange: exchange, Queue: queue, RoutingKey: "bound"}},
	})
	for _, tc := range []struct {
		name    string
		options map[string]string
		key     string
		want    error
		text    string
	}{
		{"routed", map[string]string{"exchange": exchange}, "bound", nil, ""},
		{"no matching binding", map[string]string{"exchange": exchange}, "nobody-listens", rabbitmq.ErrUnroutable, "NO_ROUTE"},
		{"no matching binding, not mandatory", map[string]string{"exchange": exchange, "mandatory": "false"}, "nobody-listens", nil, ""},
		{"exchange does not exist", map[string]string{"exchange": uniqueName("missing")}, "bound", rabbitmq.ErrNotConfirmed, "no exchange"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := c.Publisher(tc.options)
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			for range 2 { // the second publish shows the channel recovered
				err := pub.Publish(tc.key, message.NewMessage(watermill.NewUUID(), []byte("x")))
				if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
					t.Fatalf("Publish: %v; want %v", err, tc.want)
				}
				if err != nil && !strings.Contains(err.Error(), tc.text) {
					t.Fatalf("Publish: %v; want it to say %q", err, tc.text)
				}
			}
		})
	}
	if _, err := c.Publisher(map[string]string{"qos": "1"}); err == nil || !strings.Contains(err.Error(), "options.qos: unknown") {
		t.Fatalf("unknown option: %v; want options.qos: unknown ...", err)
	}
}

// A queue at max length with overflow reject-publish nacks the messages
// over the limit: exactly those publishes fail, and every message whose
// publish succeeded is in the queue.
func TestRejectPublishAtMaxLength(t *testing.T) {
	queue := uniqueName("bounded")
	adm := newAdmin(t)
	adm.cleanup([]string{queue}, nil)
	const limit, total, publishers = 10, 60, 12
	c := newClient(t, rabbitmq.Config{
		Queues: []rabbitmq.QueueConfig{{Name: queue, Type: rabbitmq.QueueClassic, MaxLength: limit, Overflow: rabbitmq.OverflowRejectPublish}},
	})
	pub, err := c.Publisher(nil) // default exchange: the routing key is the queue
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	var (
		mu       sync.Mutex
		accepted = map[string]bool{}
		rejected int
		wg       sync.WaitGroup
		work     = make(chan *message.Message)
	)
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				err := pub.Publish(queue, m)
				mu.Lock()
				switch {
				case err == nil:
					accepted[m.UUID] = true
				case errors.Is(err, rabbitmq.ErrNacked):
					rejected++
				default:
					t.Errorf("publish %s: %v; want nil or ErrNacked", m.UUID, err)
				}
				mu.Unlock()
			}
		}()
	}
	for range total {
		work <- message.NewMessage(watermill.NewUUID(), []byte("x"))
	}
	close(work)
	wg.Wait()

	if len(accepted) != limit || rejected != total-limit {
		t.Fatalf("%d accepted, %d rejected; want %d and %d", len(accepted), rejected, limit, total-limit)
	}
	for range limit {
		d := adm.get(queue, 5*time.Second)
		if !accepted[d.MessageId] {
			t.Fatalf("queue holds %s, whose publish was not reported as accepted", d.MessageId)
		}
		delete(accepted, d.MessageId)
	}
	if len(accepted) != 0 {
		t.Fatalf("confirmed but missing from the queue: %v", accepted)
	}
}

// A queue that exists with other arguments fails Connect with a message
// naming the queue and the mismatch.
func TestTopologyMismatch(t *testing.T) {
	queue := uniqueName("mismatch")
	adm := newAdmin(t)
	adm.cleanup([]string{queue}, nil)
	ch, err := adm.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil { // classic
		t.Fatal(err)
	}
	_ = ch.Close()

	c, err := rabbitmq.New(rabbitmq.Config{
		URL:    rabbitmq.URL(brokerURL(t)),
		Queues: []rabbitmq.QueueConfig{{Name: queue, Type: rabbitmq.QueueQuorum}},
	}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Open(context.Background())
	var mismatch *rabbitmq.MismatchError
	if !errors.As(err, &mismatch) || mismatch.Name != queue {
		t.Fatalf("Connect: %v; want a MismatchError for %s", err, queue)
	}
	for _, want := range []string{queue, "x-queue-type"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("Connect: %q; want it to name %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "guest:guest") {
		t.Fatalf("Connect error leaks the password: %v", err)
	}
}

// The stop protocol: cancelling the Subscribe context stops intake while
// delivered messages stay settleable; Close requeues the unsettled ones.
// The same with messages settled through Ack and through their
// transport.Settler; a settle after Close changes nothing.
func TestStopIntakeThenClose(t *testing.T) {
	for _, byConsumer := range []bool{false, true} {
		t.Run(fmt.Sprintf("ByConsumer=%v", byConsumer), func(t *testing.T) {
			testStopIntakeThenClose(t, byConsumer)
		})
	}
}

func testStopIntakeThenClose(t *testing.T, byConsumer bool) {
	queue := uniqueName("stop")
	adm := newAdmin(t)
	adm.cleanup([]string{queue}, nil)
	c := newClient(t, rabbitmq.Config{Queues: []rabbitmq.QueueConfig{{Name: queue, Type: rabbitmq.QueueClassic}}})
	pub, err := c.Publisher(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for _, p := range []string{"a", "b", "c"} {
		if err := pub.Publish(queue, message.NewMessage(p, []byte(p))); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := c.Subscriber(rabbitmq.SubscriberConfig{Handler: "stop", Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	subCtx := context.Background()
	if byConsumer {
		subCtx = transport.SettledByConsumer(subCtx)
	}
	ctx, stopIntake := context.WithCancel(subCtx)
	out, err := sub.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(); err != nil {
		t.Fatalf("Ready while consuming: %v", err)
	}
	first, second := <-out, <-out
	stopIntake()
	if m, open := <-out; open {
		t.Fatalf("output channel delivered %s after intake stopped", m.UUID)
	}
	if first.Context().Err() != nil {
		t.Fatal("stopping intake cancelled the context of a message in flight")
	}
	if byConsumer {
		transport.SettlerFrom(first.Context()).Settle(true)
	} else {
		first.Ack()
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if second.Context().Err() == nil {
		t.Error("the unsettled message's context did not end at Close")
	}
	if byConsumer {
		transport.SettlerFrom(second.Context()).Settle(true) // too late: requeued
	} else {
		second.Ack()
	}
	if first.UUID != "a" || second.UUID != "b" {
		t.Fatalf("got %s, %s; want a, b", first.UUID, second.UUID)
	}
	if d := adm.get(queue, 5*time.Second); d.MessageId != "b" || !d.Redelivered {
		t.Fatalf("next message %s (redelivered %v); want b, redelivered", d.MessageId, d.Redelivered)
	}
	if d := adm.get(queue, 5*time.Second); d.MessageId != "c" {
		t.Fatalf("next message %s; want c", d.MessageId)
	}
	if n := adm.depth(queue); n != 0 {
		t.Fatalf("queue holds %d more messages; want none (a was acked)", n)
	}
}

// After a cut: publishing during the outage fails (never a false success),
// the topology is declared again, consumers resume, publishers recover and
// Ready reflects all of it.
func TestReconnectThroughProxy(t *testing.T) {
	queue := uniqueName("reconnect")
	adm := newAdmin(t)
	adm.cleanup([]string{queue}, nil)
	proxy := integration.NewProxy(t, brokerAddr(t))
	c := newClient(t, rabbitmq.Config{
		URL:    rabbitmq.URL(viaProxy(t, proxy.Addr())),
		Queues: []rabbitmq.QueueConfig{{Name: queue, Type: rabbitmq.QueueQuorum}},
	})
	pub, err := c.Publisher(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := c.Subscriber(rabbitmq.SubscriberConfig{Handler: "reconnect", Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	out, err := sub.Subscribe(context.Background(), queue)
	if err != nil {
		t.Fatal(err)
	}
	// roundTrip publishes a message and consumes until it and the extra
	// ids have all arrived.
	roundTrip := func(label string, extra ...string) {
		t.Helper()
		m := message.NewMessage(watermill.NewUUID(), []byte(label))
		if err := pub.Publish(queue, m); err != nil {
			t.Fatalf("%s: publish: %v", label, err)
		}
		want := map[string]bool{m.UUID: true}
		for _, id := range extra {
			want[id] = true
		}
		for len(want) > 0 {
			select {
			case got := <-out:
				got.Ack()
				delete(want, got.UUID)
			case <-time.After(15 * time.Second):
				t.Fatalf("%s: not consumed: %v", label, want)
			}
		}
	}
	roundTrip("before the cut")

	proxy.Refuse(true)
	proxy.Cut()
	waitFor(t, "not ready after the cut", func() bool { return c.Ready() != nil })
	err = pub.Publish(queue, message.NewMessage(watermill.NewUUID(), []byte("during")))
	if !errors.Is(err, rabbitmq.ErrNotConnected) {
		t.Fatalf("publish during the outage: %v; want ErrNotConnected", err)
	}
	if strings.Contains(err.Error(), "guest:guest") {
		t.Fatalf("error leaks the password: %v", err)
	}
	// Delete the configured queue while the client is away: the reconnect
	// must declare it again (else the mandatory publish after it fails as
	// unroutable and the consumer finds no queue).
	ch, err := adm.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	_ = ch.Close()

	// With publish.outage_wait the publish waits, bounded: it fails after
	// the wait, or succeeds once the connection is back within it.
	waiting, err := c.NewPublisher(rabbitmq.PublishConfig{OutageWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	start := time.Now()
	err = waiting.Publish(queue, message.NewMessage(watermill.NewUUID(), []byte("during")))
	if !errors.Is(err, rabbitmq.ErrNotConnected) || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("publish with outage_wait 300ms: %v after %s; want ErrNotConnected after the wait", err, time.Since(start))
	}
	patient, err := c.NewPublisher(rabbitmq.PublishConfig{OutageWait: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer patient.Close()
	waited := message.NewMessage(watermill.NewUUID(), []byte("waited"))
	patientErr := make(chan error, 1)
	go func() { patientErr <- patient.Publish(queue, waited) }()

	proxy.Refuse(false)
	waitFor(t, "ready after the broker is back", func() bool { return c.Ready() == nil })
	if err := <-patientErr; err != nil {
		t.Fatalf("publish that waited for the reconnect: %v", err)
	}
	roundTrip("after the reconnect", waited.UUID)
}

// waitFor polls cond (state with no event to wait on: readiness) until it
// holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReconnectUnderLoad is watermill's TestReconnect without its data
// race: publishers keep publishing (retrying what fails) while the proxy
// cuts every connection twice; every message whose Publish returned nil
// is consumed.
func TestReconnectUnderLoad(t *testing.T) {
	const total, publishers = 3000, 16
	queue := uniqueName("load")
	newAdmin(t).cleanup([]string{queue}, nil)
	proxy := integration.NewProxy(t, brokerAddr(t))
	c := newClient(t, rabbitmq.Config{
		URL:    rabbitmq.URL(viaProxy(t, proxy.Addr())),
		Queues: []rabbitmq.QueueConfig{{Name: queue, Type: rabbitmq.QueueQuorum}},
	})
	pub, err := c.Publisher(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := c.Subscriber(rabbitmq.SubscriberConfig{Handler: "load", Concurrency: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	out, err := sub.Subscribe(context.Background(), queue)
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu        sync.Mutex
		received  = map[string]bool{}
		confirmed = map[string]bool{}
		all       = make(chan struct{})
	)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for m := range out {
			m.Ack()
			mu.Lock()
			received[m.UUID] = true
			if len(received) == total {
				close(all)
			}
			mu.Unlock()
		}
	}()

	work := make(chan *message.Message)
	progress := make(chan struct{}, total)
	var wg sync.WaitGroup
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				for pub.Publish(queue, m) != nil {
					time.Sleep(20 * time.Millisecond) // retry backoff while the broker is away
				}
				mu.Lock()
				confirmed[m.UUID] = true
				mu.Unlock()
				progress <- struct{}{}
			}
		}()
	}
	cutsDone := make(chan struct{})
	go func() {
		defer close(cutsDone)
		for n := 1; n <= total; n++ {
			<-progress
			if n == total/3 || n == total/2 {
				proxy.Refuse(true)
				proxy.Cut()
				time.Sleep(300 * time.Millisecond) // the outage
				proxy.Refuse(false)
			}
		}
	}()
	for range total {
		work <- message.NewMessage(watermill.NewUUID(), []byte("x"))
	}
	close(work)
	wg.Wait()
	<-cutsDone

	select {
	case <-all:
	case <-time.After(60 * time.Second):
	}
	mu.Lock()
	var missing []string
	for id := range confirmed {
		if !received[id] {
			missing = append(missing, id)
		}
	}
	mu.Unlock()
	if len(confirmed) != total || len(missing) > 0 {
		t.Fatalf("%d of %d confirmed; %d confirmed but never consumed: %v", len(confirmed), total, len(missing), missing)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	<-recvDone
}

// Every message reaches the subscription whatever the number of AMQP
// consumers (the consumers option), and Ready is nil while they consume.
func TestConsumers(t *testing.T) {
	for _, consumers := range []int{1, 3} {
		t.Run(fmt.Sprint(consumers), func(t *testing.T) {
			const total = 200
			queue := uniqueName("consumers")
			newAdmin(t).cleanup([]string{queue}, nil)
			c := newClient(t, rabbitmq.Config{Queues: []rabbitmq.QueueConfig{{Name: queue, Type: rabbitmq.QueueClassic}}})
			pub, err := c.Publisher(nil)
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			sub, err := c.Subscriber(rabbitmq.SubscriberConfig{Handler: "consumers", Concurrency: 12, Options: map[string]string{"consumers": fmt.Sprint(consumers)}})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			out, err := sub.Subscribe(context.Background(), queue)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Ready(); err != nil {
				t.Fatalf("Ready: %v", err)
			}
			msgs := make([]*message.Message, total)
			for i := range msgs {
				msgs[i] = message.NewMessage(watermill.NewUUID(), []byte("x"))
				msgs[i].Metadata.Set("n", fmt.Sprint(i))
			}
			if err := pub.Publish(queue, msgs...); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for len(seen) < total {
				select {
				case m := <-out:
					if m.Metadata.Get("n") == "" {
						t.Fatalf("metadata lost: %v", m.Metadata)
					}
					seen[m.UUID] = true
					m.Ack()
				case <-time.After(15 * time.Second):
					t.Fatalf("received %d of %d", len(seen), total)
				}
			}
		})
	}
}
