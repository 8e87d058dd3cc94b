package aliyun_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/aliyun"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/ports"
)

// order_by on Aliyun: with the device from the topic ({device_id}), each
// device's messages are handled one at a time in the order they were
// pushed, several devices at once, and every one is accepted.
func TestOrderedOnAliyun(t *testing.T) {
	const devices, perDevice, workers = 12, 25, 8
	addr := aliyun.SigningBroker(t)
	queue := aliyun.UniqueQueue("ordered")
	c := aliyun.ConsumerConfig(t, addr, queue)
	config := fmt.Sprintf(`service: hx-ord-amqp1
http_addr: "off"
drain_timeout: 5s
poison: {transport: memory, topic: poison}
transports:
%[1]shandlers:
  probe: {transport: aliyun, topic: "/a1b2/+/user/#", concurrency: %[2]d, order_by: "{device_id}"}
`, aliyun.ServiceSection(c), workers)
	path := filepath.Join(t.TempDir(), "service.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	var (
		mu            sync.Mutex
		active        = map[string]bool{}
		seen          = map[string][]int{}
		running, most int
		total         int
		done          = make(chan struct{})
	)
	handler := func(_ context.Context, msg ports.Message) error {
		key := msg.Attributes[aliyun.MetadataDeviceID]
		seq, _ := strconv.Atoi(string(msg.Payload))
		mu.Lock()
		if active[key] {
			t.Errorf("device %s: message %d handled while another of the device runs", key, seq)
		}
		active[key] = true
		running++
		most = max(most, running)
		mu.Unlock()
		time.Sleep(time.Millisecond) // handler latency, not synchronisation
		mu.Lock()
		active[key] = false
		running--
		seen[key] = append(seen[key], seq)
		if total++; total == devices*perDevice {
			close(done)
		}
		mu.Unlock()
		return nil
	}
	svc := app.New(app.Service{Name: "hxord", Options: []fx.Option{app.AsHandler(func() ports.Handler {
		return ports.HandlerFunc{HandlerName: "probe", Func: handler}
	})}}, app.Env{"HXORD_CONFIG": path}, fx.NopLogger)
	if err := svc.Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })

	p := aliyun.NewPusher(t, addr)
	// Each device sends in bursts, so that several of its messages are in
	// the service at once.
	const burst = 5
	for first := 1; first <= perDevice; first += burst {
		for d := range devices {
			topic := fmt.Sprintf("/a1b2/dev-%d/user/status", d)
			for seq := first; seq < first+burst; seq++ {
				if err := p.Push(queue, topic, fmt.Sprintf("m-%d-%d", d, seq), []byte(strconv.Itoa(seq)), nil); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%d of %d messages handled within 2m", total, devices*perDevice)
	}
	mu.Lock()
	defer mu.Unlock()
	for d := range devices {
		key := fmt.Sprintf("a1b2.dev-%d", d)
		got := seen[key]
		for i, seq := range got {
			if seq != i+1 {
				t.Fatalf("device %s handled %v; want 1..%d in order", key, got, perDevice)
			}
		}
		if len(got) != perDevice {
			t.Fatalf("device %s handled %d messages; want %d", key, len(got), perDevice)
		}
	}
	if most < 2 {
		t.Errorf("at most %d handlers ran at once; want devices in parallel", most)
	}
}
