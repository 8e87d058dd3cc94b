package load

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/hexmill/hexmill/integration"
)

// TestSendRecoversFromCut cuts the generator's connections mid-stream: it
// reconnects, publishes again what was in flight, and every message
// arrives (duplicates allowed).
func TestSendRecoversFromCut(t *testing.T) {
	ctx := testContext(t)
	rabbitURL, ch := rabbit(t)
	queue := tempQueue(t, rabbitURL, "hexmill-load-cut")
	u, err := url.Parse(rabbitURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := integration.NewProxy(t, u.Host)
	viaProxy := strings.Replace(rabbitURL, u.Host, proxy.Addr(), 1)

	const count = 3000
	run := NewRunID()
	type result struct {
		r   SendResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := Send(ctx, SendConfig{Transport: RabbitMQ, URL: viaProxy, RunID: run, Count: count, Rate: 5000, Publishers: 2, RoutingKey: queue})
		done <- result{r, err}
	}()

	deliveries, err := ch.Consume(queue, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]int, count)
	distinct, total, cut := 0, 0, false
	for distinct < count {
		select {
		case d := <-deliveries:
			var tel serviceTelemetry
			if err := json.Unmarshal(d.Body, &tel); err != nil {
				t.Fatal(err)
			}
			n := int(tel.Readings[Metric])
			if seen[n] == 0 {
				distinct++
			}
			seen[n]++
			total++
			if distinct == count/3 && !cut {
				proxy.Cut()
				cut = true
			}
		case <-ctx.Done():
			t.Fatalf("received %d of %d: %v", distinct, count, ctx.Err())
		}
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.r.Confirmed != count || total-count > res.r.Republished {
		t.Errorf("confirmed %d of %d; %d duplicates, %d republished", res.r.Confirmed, count, total-count, res.r.Republished)
	}
	t.Logf("cut after %d: all %d confirmed and received, %d republished, %d duplicates", count/3, count, res.r.Republished, total-count)
}
