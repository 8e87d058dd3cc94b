package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/integration/load"
)

// Ordered by key (handlers.telemetry.order_by "{device_id}", 32 workers,
// the handler taking 0-20 ms per message) on the binary, MQTT in and
// RabbitMQ out, SIGKILLed and restarted mid-stream. Devices send in bursts
// (orderedBurst messages of one device in a row), so that one device's
// messages are in the service together and the workers would handle them
// out of order without the key. For every device the alerts, in the order
// they reach the sink, carry its sequence numbers rising: a new number is
// never below one seen before. A number seen again is a redelivery, which
// the test counts and allows after the kill only. Nothing is lost.
func TestE2EOrderedByKeySIGKILL(t *testing.T) {
	const (
		devices      = 2000
		orderedBurst = 4
		publishers   = 4
	)
	e := newE2EEnv(t)
	e.telemetryExtra = "    concurrency: 32\n    order_by: \"{device_id}\"\n"
	e.extra = "  handler_latency: 20ms\n" // in the domain section, which the configuration ends with
	sc := e2eScale(scale{Count: 8000}, scale{Count: 100000})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute+time.Duration(sc.Count)*2*time.Millisecond)
	defer cancel()

	svc := e.startService("r0")
	sink := newOrderSink(t, e)

	// Message i is device (i / orderedBurst) % devices's; each device's
	// messages go through one publisher, one at a time, so that they reach
	// the broker in sequence.
	var sending sync.WaitGroup
	sendErrs := make(chan error, publishers)
	for p := range publishers {
		c := rawMQTTClient(t, ctx, e.mosquitto.Addr(), fmt.Sprintf("e2e-ord-%s-%d", e.run, p))
		sending.Add(1)
		go func() {
			defer sending.Done()
			for i := range sc.Count {
				d := (i / orderedBurst) % devices
				if d%publishers != p {
					continue
				}
				device := load.DeviceID(e.run, d)
				payload, _ := json.Marshal(map[string]any{"device_id": device, "readings": map[string]int{load.Metric: i}, "at": time.Now().UTC()})
				if _, err := c.Publish(ctx, &paho.Publish{QoS: 1, Topic: "devices/" + device + "/telemetry", Payload: payload}); err != nil {
					sendErrs <- fmt.Errorf("publish %d: %w", i, err)
					return
				}
			}
		}()
	}
	t.Cleanup(sending.Wait)

	sink.await(t, ctx, sc.Count/3)
	svc.kill(t)
	killedAt := sink.mark()
	t.Logf("SIGKILL at %d alerts received", killedAt)
	again := e.startService("r0")
	sending.Wait()
	close(sendErrs)
	for err := range sendErrs {
		t.Fatal(err)
	}
	sink.await(t, ctx, sc.Count)
	again.requireReady(t)

	backwards, redelivered := sink.check(sc.Count)
	for _, b := range backwards {
		t.Error(b)
	}
	t.Logf("%d messages of %d devices, %d alerts received; redelivered after the kill (seen again): %d", sc.Count, devices, sink.received(), redelivered)
}

// orderSink reads the alerts the service publishes, in queue order, from a
// queue of the test's bound to the events exchange.
type orderSink struct {
	mu       sync.Mutex
	alerts   []orderAlert
	distinct map[int]bool
	killedAt int
	changed  chan struct{} // signalled on every alert
}

type orderAlert struct {
	device string
	seq    int
}

func newOrderSink(t *testing.T, e *e2eEnv) *orderSink {
	t.Helper()
	conn, err := amqp.Dial(e.rabbitURL)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	queue := "e2e-" + e.run + "-ordered"
	if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, "AlertRaised", e.exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &orderSink{distinct: map[int]bool{}, killedAt: -1, changed: make(chan struct{}, 1)}
	var reading sync.WaitGroup
	reading.Add(1)
	go func() {
		defer reading.Done()
		for d := range deliveries {
			var a struct {
				DeviceID string  `json:"device_id"`
				Value    float64 `json:"value"`
			}
			if err := json.Unmarshal(d.Body, &a); err != nil {
				t.Errorf("alert %q: %v", d.Body, err)
				continue
			}
			s.mu.Lock()
			s.alerts = append(s.alerts, orderAlert{device: a.DeviceID, seq: int(a.Value)})
			s.distinct[int(a.Value)] = true
			s.mu.Unlock()
			select {
			case s.changed <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(queue, false, false, false)
		_ = conn.Close() // ends deliveries
		reading.Wait()
	})
	return s
}

// await waits until n distinct messages were alerted on.
func (s *orderSink) await(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	for {
		s.mu.Lock()
		got := len(s.distinct)
		s.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-s.changed:
		case <-ctx.Done():
			t.Fatalf("%d of %d messages alerted on, %d lost: %v", got, n, n-got, ctx.Err())
		}
	}
}

// mark notes the kill: the alerts received so far came before it.
func (s *orderSink) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killedAt = len(s.alerts)
	return s.killedAt
}

func (s *orderSink) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.alerts)
}

// check returns the violations of the order (a new number below one seen
// before for its device, or a number seen again before the kill) and the
// count of numbers seen again after it; a message 0..count-1 never seen
// is a violation too.
func (s *orderSink) check(count int) (violations []string, redelivered int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	highest := map[string]int{}
	seen := map[int]bool{}
	for i, a := range s.alerts {
		h, ok := highest[a.device]
		switch {
		case seen[a.seq] && (s.killedAt < 0 || i < s.killedAt):
			violations = append(violations, fmt.Sprintf("alert %d: device %s: message %d again before the kill", i, a.device, a.seq))
		case seen[a.seq]:
			redelivered++
		case ok && a.seq < h:
			violations = append(violations, fmt.Sprintf("alert %d: device %s: message %d handled after %d", i, a.device, a.seq, h))
		}
		seen[a.seq] = true
		if !ok || a.seq > h {
			highest[a.device] = a.seq
		}
	}
	for seq := range count {
		if !seen[seq] {
			violations = append(violations, fmt.Sprintf("message %d lost", seq))
		}
	}
	if len(violations) > 20 {
		violations = append(violations[:20], fmt.Sprintf("... %d violations in all", len(violations)))
	}
	return violations, redelivered
}
