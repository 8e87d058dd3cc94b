package rabbitmq_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/integration"
)

// recordingLogger keeps every log line's message and level; Warn is the
// level the app's logger adds to watermill's.
type recordingLogger struct {
	mu    sync.Mutex
	lines []logLine
}

type logLine struct {
	level, msg string
	fields     watermill.LogFields
}

func (l *recordingLogger) add(level, msg string, fields watermill.LogFields) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, logLine{level, msg, fields})
}

func (l *recordingLogger) Error(msg string, _ error, f watermill.LogFields) { l.add("ERROR", msg, f) }
func (l *recordingLogger) Warn(msg string, f watermill.LogFields)           { l.add("WARN", msg, f) }
func (l *recordingLogger) Info(msg string, f watermill.LogFields)           { l.add("INFO", msg, f) }
func (l *recordingLogger) Debug(string, watermill.LogFields)                {}
func (l *recordingLogger) Trace(string, watermill.LogFields)                {}
func (l *recordingLogger) With(watermill.LogFields) watermill.LoggerAdapter { return l }

// count is the number of lines at level whose message starts with prefix.
func (l *recordingLogger) count(level, prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if line.level == level && strings.HasPrefix(line.msg, prefix) {
			n++
		}
	}
	return n
}

// await polls cond every 10 ms until it holds, failing the test after
// within.
func await(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// privateNode starts a private RabbitMQ node for the test (an alarm on
// the shared broker would block every other test), stopped at its end.
func privateNode(t *testing.T) *integration.RabbitMQNode {
	t.Helper()
	n, err := integration.StartRabbitMQNode(integration.RabbitMQNodeOptions{Dir: t.TempDir()})
	if errors.Is(err, integration.ErrNoRabbitMQServer) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

func gauge(t *testing.T, c prometheus.Collector, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// A resource alarm (the node's memory watermark set to 0): the broker
// blocks the connection; the transport warns once with the reason,
// publishes fail within publish.confirm_timeout with ErrBlocked or
// ErrNotConfirmed (never success), Ready names the alarm after
// blocked_unready_after, the gauge says 1. Closing the subscriber (with a
// message unsettled), the publisher and the transport while blocked
// returns at once instead of waiting for the broker; the unsettled
// message is back in the queue once the alarm clears; the gauge says 0.
func TestResourceAlarm(t *testing.T) {
	node := privateNode(t)
	queue := uniqueName("alarm")
	log := &recordingLogger{}
	cfg := rabbitmq.Config{
		URL: rabbitmq.URL(node.URL()), BlockedUnreadyAfter: time.Second,
		Publish: rabbitmq.PublishConfig{ConfirmTimeout: 2 * time.Second},
		Queues:  []rabbitmq.QueueConfig{{Name: queue, Type: rabbitmq.QueueClassic}},
	}
	c, err := rabbitmq.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Open(ctx); err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = c.Close()
		}
	}()
	pub, err := c.Publisher(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if err := pub.Publish(queue, message.NewMessage(id, []byte(id))); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := c.Subscriber(rabbitmq.SubscriberConfig{Handler: "alarm", Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	out, err := sub.Subscribe(transport.SettledByConsumer(context.Background()), queue)
	if err != nil {
		t.Fatal(err)
	}
	held := <-out // delivered, never settled

	if err := node.SetMemoryAlarm(ctx, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.SetMemoryAlarm(context.Background(), false) })
	// The broker blocks a connection when it publishes: the first publish
	// goes out and gets no confirm, the later ones are not sent.
	var errs []error
	await(t, "a publish refused with ErrBlocked", 30*time.Second, func() bool {
		start := time.Now()
		err := pub.Publish(queue, message.NewMessage(watermill.NewUUID(), []byte("x")))
		if took := time.Since(start); took > 2*time.Second+500*time.Millisecond {
			t.Fatalf("a publish on a blocked connection took %s; publish.confirm_timeout is 2s", took)
		}
		if err == nil {
			t.Fatal("a publish during a resource alarm succeeded")
		}
		errs = append(errs, err)
		return errors.Is(err, rabbitmq.ErrBlocked)
	})
	for _, err := range errs {
		if !errors.Is(err, rabbitmq.ErrBlocked) && !errors.Is(err, rabbitmq.ErrNotConfirmed) {
			t.Errorf("publish error %v; want ErrBlocked or ErrNotConfirmed", err)
		}
	}
	t.Logf("publish errors while blocked: %v", errs)
	if n := log.count("WARN", "RabbitMQ blocked the connection"); n != 1 {
		t.Errorf("%d warnings about the block; want one", n)
	}
	if g := gauge(t, c, "transport_blocked"); g != 1 {
		t.Errorf("transport_blocked = %v while blocked; want 1", g)
	}
	await(t, "Ready to report the alarm", 5*time.Second, func() bool {
		err := c.Ready()
		return errors.Is(err, rabbitmq.ErrBlocked) && strings.Contains(err.Error(), node.Addr)
	})
	t.Logf("Ready while blocked: %v", c.Ready())

	// Stop while blocked: every close returns without the broker.
	start := time.Now()
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("closing on a blocked connection took %s", took)
	}
	t.Logf("subscriber, publisher and transport closed in %s on a blocked connection", time.Since(start).Round(time.Millisecond))
	if g := gauge(t, c, "transport_blocked"); g != 0 {
		t.Errorf("transport_blocked = %v after close; want 0", g)
	}

	if err := node.SetMemoryAlarm(ctx, false); err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial(node.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	d, ok, err := ch.Get(queue, true)
	if err != nil || !ok || d.MessageId != held.UUID {
		t.Fatalf("first message in the queue after the alarm: %q, %v, %v; want %s (unsettled at Close, requeued)", d.MessageId, ok, err, held.UUID)
	}
}

// A basic.cancel from the broker (here: the queue deleted and declared
// again) makes the consumer subscribe again, logged once; messages flow.
func TestServerCancelResubscribes(t *testing.T) {
	queue := uniqueName("cancel")
	adm := newAdmin(t)
	adm.cleanup([]string{queue}, nil)
	log := &recordingLogger{}
	cfg := rabbitmq.Config{
		URL:       rabbitmq.URL(brokerURL(t)),
		Reconnect: rabbitmq.ReconnectConfig{InitialInterval: 50 * time.Millisecond, MaxInterval: 200 * time.Millisecond},
		Queues:    []rabbitmq.QueueConfig{{Name: queue, Type: rabbitmq.QueueClassic}},
	}
	c, err := rabbitmq.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscriber(rabbitmq.SubscriberConfig{Handler: "cancel", Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	out, err := sub.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := adm.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	await(t, "the cancel to be logged", 10*time.Second, func() bool {
		return log.count("INFO", "RabbitMQ cancelled the consumer") == 1
	})
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(t.Context(), "", queue, false, false, amqp.Publishing{MessageId: "after", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-out:
		if m.UUID != "after" {
			t.Fatalf("got %s; want the message published after the cancel", m.UUID)
		}
		transport.SettlerFrom(m.Context()).Settle(true)
	case <-time.After(15 * time.Second):
		t.Fatal("no message within 15 s after the queue came back: the consumer did not subscribe again")
	}
	await(t, "Ready after resubscribing", 5*time.Second, func() bool { return c.Ready() == nil })
	if n := log.count("INFO", "RabbitMQ cancelled the consumer"); n != 1 {
		t.Errorf("the cancel was logged %d times; want once", n)
	}
}

// A broker that stops answering (a proxy that holds everything) during a
// stop: with the stop's context given to Stopping, closing a subscriber
// whose channel close gets no answer returns shortly before the context's
// deadline (the socket is closed), and the publisher and the transport
// close at once after it; without it they would wait for the heartbeat
// to notice.
func TestCloseBoundedByStopContext(t *testing.T) {
	queue := uniqueName("stall")
	adm := newAdmin(t)
	adm.cleanup([]string{queue}, nil)
	proxy := integration.NewProxy(t, brokerAddr(t))
	cfg := rabbitmq.Config{
		URL:    rabbitmq.URL(viaProxy(t, proxy.Addr())),
		Queues: []rabbitmq.QueueConfig{{Name: queue, Type: rabbitmq.QueueClassic}},
	}
	c, err := rabbitmq.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(t.Context()); err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			proxy.Stall(false)
			_ = c.Close()
		}
	}()
	pub, err := c.Publisher(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(queue, message.NewMessage("held", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	sub, err := c.Subscriber(rabbitmq.SubscriberConfig{Handler: "stall", Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	out, err := sub.Subscribe(transport.SettledByConsumer(context.Background()), queue)
	if err != nil {
		t.Fatal(err)
	}
	<-out // delivered, never settled

	proxy.Stall(true)
	const deadline = 2 * time.Second
	stopCtx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	c.Stopping(stopCtx)
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	took := time.Since(start)
	t.Logf("closed in %s with a stop deadline of %s and a broker that does not answer", took.Round(time.Millisecond), deadline)
	if took > deadline {
		t.Fatalf("closing took %s, past the stop's deadline %s", took, deadline)
	}
	proxy.Stall(false)
	if d := adm.get(queue, 10*time.Second); d.MessageId != "held" {
		t.Fatalf("got %s; want the unsettled message back", d.MessageId)
	}
}
