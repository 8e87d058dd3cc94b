package load

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestCheckerCounts publishes AlertRaised messages straight to the sink with
// numbers missing, duplicates, strangers and garbage, and checks that the
// report counts each exactly.
func TestCheckerCounts(t *testing.T) {
	ctx := testContext(t)
	url, ch := rabbit(t)
	run := NewRunID()
	exchange := "hexmill-load-test-" + run
	queue := "hexmill-load-check-" + run
	t.Cleanup(func() {
		deleteQueue(t, url, queue)
		if _, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil); err == nil {
			t.Errorf("queue %s still exists after Close with DeleteQueue", queue)
		}
	})
	t.Cleanup(func() {
		if err := ch.ExchangeDelete(exchange, false, false); err != nil {
			t.Errorf("delete exchange: %v", err)
		}
	})

	chk, err := NewChecker(ctx, CheckConfig{
		URL: url, Queue: queue, Exchange: exchange, BindingKey: "AlertRaised",
		RunID: run, QuietTimeout: 300 * time.Millisecond, DeleteQueue: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := chk.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	publish := func(body []byte) {
		t.Helper()
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, "AlertRaised", true, false, amqp.Publishing{Body: body})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("publish not confirmed: %v", err)
		}
	}
	alert := func(device string, metric string, v float64) []byte {
		b, err := json.Marshal(serviceAlert{DeviceID: device, Metric: metric, Value: v, Threshold: -1, At: time.Now().Add(-5 * time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	const count = 100
	lost := []int{5, 17, 60}
	dups := map[int]int{3: 2, 42: 1} // extra deliveries
	// Strangers and garbage first; the queue is FIFO with one consumer, so
	// once the last message arrived, all did.
	publish(alert("load-"+run+"x-1", Metric, 1))       // another run whose ID starts with ours
	publish(alert(DeviceID(run, 1), "temperature", 7)) // another metric
	publish([]byte("{not json"))
	publish(alert(DeviceID(run, 0), Metric, 150)) // never sent
	for n := range count {
		if slices.Contains(lost, n) {
			continue
		}
		device := DeviceID(run, n%4)
		if n%2 == 1 {
			pk, dn := AliyunDevice(run, n%4)
			device = pk + "." + dn // the Aliyun naming counts too
		}
		for range 1 + dups[n] {
			publish(alert(device, Metric, float64(n)))
		}
	}
	distinct := count - len(lost) + 1 // and 150
	if err := chk.AwaitReceived(ctx, distinct); err != nil {
		t.Fatal(err)
	}
	if got := chk.Received(); got != distinct {
		t.Fatalf("Received() = %d, want %d", got, distinct)
	}

	r, err := chk.Wait(ctx, Expect(run, count))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s\n%s", r, r.Markdown())
	want := Report{Sent: count, Received: count - len(lost), Lost: len(lost), LostSample: lost, Duplicated: 3, Unexpected: 1, Ignored: 2, Malformed: 1}
	got := Report{Sent: r.Sent, Received: r.Received, Lost: r.Lost, LostSample: r.LostSample, Duplicated: r.Duplicated, Unexpected: r.Unexpected, Ignored: r.Ignored, Malformed: r.Malformed}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("report counts\n got %+v\nwant %+v", got, want)
	}
	if r.OK() {
		t.Error("OK() with messages lost")
	}
	if !(r.LatencyP50 >= 5*time.Millisecond && r.LatencyP50 <= r.LatencyP99 && r.LatencyP99 <= r.LatencyMax) {
		t.Errorf("latencies p50 %v p99 %v max %v: want 5ms <= p50 <= p99 <= max", r.LatencyP50, r.LatencyP99, r.LatencyMax)
	}
	if !strings.Contains(r.String(), "lost 3") || !strings.Contains(r.String(), "first lost 5,17,60") {
		t.Errorf("summary %q does not tell the losses", r.String())
	}
}

// TestReportGapsAndLatency feeds deliveries with chosen times and checks
// the latencies and the recovery gap exactly.
func TestReportGapsAndLatency(t *testing.T) {
	run := "abcd1234"
	c := &Checker{cfg: CheckConfig{RunID: run}, changed: make(chan struct{})}
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	deliver := func(seq, sentMs, recvMs int) {
		b, _ := json.Marshal(serviceAlert{DeviceID: DeviceID(run, 0), Metric: Metric, Value: float64(seq), At: ms(sentMs)})
		c.record(b, ms(recvMs))
	}
	// Messages sent every 10 ms from t0; 0..2 arrive 2 ms later; the
	// service is down from 25 ms to 300 ms: 3..5 (sent at 30, 40, 50)
	// arrive at 300, 301 and 302 (3 twice), then 6 normally.
	deliver(0, 0, 2)
	deliver(1, 10, 12)
	deliver(2, 20, 22)
	deliver(3, 30, 300)
	deliver(3, 30, 300)
	deliver(4, 40, 301)
	deliver(5, 50, 302)
	deliver(6, 310, 312)

	sent := SendResult{RunID: run, Count: 7, Confirmed: 7, Started: t0, Elapsed: 310 * time.Millisecond}
	r := c.report(sent)
	if r.Received != 7 || r.Lost != 0 || r.Duplicated != 1 {
		t.Fatalf("counts %+v", r)
	}
	// The gap: from 30 ms (3 was sent, 2 had arrived at 22) to 300 ms.
	if r.LongestGap != 270*time.Millisecond || r.LongestGapAt != 30*time.Millisecond {
		t.Errorf("longest gap %v at %v, want 270ms at 30ms", r.LongestGap, r.LongestGapAt)
	}
	// Latencies 2,2,2,270,261,252,2: p50 2 ms, p99 and max 270 ms.
	if r.LatencyP50 != 2*time.Millisecond || r.LatencyP99 != 270*time.Millisecond || r.LatencyMax != 270*time.Millisecond {
		t.Errorf("latency p50 %v p99 %v max %v, want 2ms 270ms 270ms", r.LatencyP50, r.LatencyP99, r.LatencyMax)
	}
	if r.Duration != 312*time.Millisecond {
		t.Errorf("duration %v, want 312ms", r.Duration)
	}
	if !r.OK() || !strings.HasPrefix(r.String(), "OK run abcd1234") {
		t.Errorf("summary %q", r)
	}
}
