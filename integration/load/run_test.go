package load

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestRun runs the generator and the checker around a stand-in for the
// service that drops message 7 and raises message 11 twice.
func TestRun(t *testing.T) {
	ctx := testContext(t)
	url, ch := rabbit(t)
	run := NewRunID()
	in := tempQueue(t, url, "hexmill-load-run-in")
	sink := "hexmill-load-run-sink-" + run
	exchange := "hexmill-load-run-" + run
	t.Cleanup(func() {
		if err := ch.ExchangeDelete(exchange, false, false); err != nil {
			t.Errorf("delete exchange: %v", err)
		}
	})

	// The stand-in: telemetry from in, AlertRaised to the exchange.
	svcCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	deliveries, err := ch.Consume(in, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-svcCtx.Done():
				return
			case d := <-deliveries:
				var tel serviceTelemetry
				if err := json.Unmarshal(d.Body, &tel); err != nil {
					t.Errorf("telemetry %s: %v", d.Body, err)
					return
				}
				seq := int(tel.Readings[Metric])
				body, _ := json.Marshal(serviceAlert{DeviceID: tel.DeviceID, Metric: Metric, Value: float64(seq), Threshold: -1, At: tel.At})
				times := 1
				switch seq {
				case 7:
					times = 0
				case 11:
					times = 2
				}
				for range times {
					if err := ch.PublishWithContext(svcCtx, exchange, "AlertRaised", false, false, amqp.Publishing{Body: body}); err != nil {
						t.Errorf("publish alert: %v", err)
						return
					}
				}
			}
		}
	}()

	r, err := Run(ctx, RunConfig{
		Send:  SendConfig{Transport: RabbitMQ, URL: url, RunID: run, Count: 300, RoutingKey: in},
		Check: CheckConfig{URL: url, Queue: sink, Exchange: exchange, BindingKey: "AlertRaised", QuietTimeout: 500 * time.Millisecond, DeleteQueue: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", r)
	if r.Sent != 300 || r.Received != 299 || r.Lost != 1 || len(r.LostSample) != 1 || r.LostSample[0] != 7 || r.Duplicated != 1 || r.Transport != RabbitMQ || r.RunID != run {
		t.Errorf("report %+v, want 300 sent, 299 received, 7 lost, 1 duplicated", r)
	}
	if r.SendRate <= 0 || r.Throughput <= 0 || r.LatencyMax <= 0 {
		t.Errorf("rates %v %v latency %v, want positive", r.SendRate, r.Throughput, r.LatencyMax)
	}
}
