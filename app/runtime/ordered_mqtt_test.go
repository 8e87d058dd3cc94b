package runtime_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/ports"
)

// On MQTT, with the key taken from the topic (topic_params), each
// device's readings are handled in the order it published them, several
// devices at once, and every message is acked (nothing is redelivered to
// the next subscriber of the session).
func TestOrderedOnMQTT(t *testing.T) {
	if testing.Short() {
		t.Skip("needs an MQTT broker")
	}
	const keys, perKey, workers = 20, 30, 8
	run := strings.ToLower(watermill.NewShortUUID())
	mcfg := mqtt.Config{Servers: []string{integration.MQTTURL(t)}, ClientID: "hx-ord-" + run + "-{conn}-{n}", PublishTimeout: time.Minute}
	base := "hx-ord/" + run
	cfg := testConfig()
	cfg.Events = nil
	cfg.Handlers["test"] = config.Binding{Transport: config.TransportMQTT, Topic: base + "/devices/+/status", Group: "g", Concurrency: workers,
		TopicParams: base + "/devices/{device}/status", OrderBy: "{device}", Options: map[string]string{}}
	cfg.Poison = config.EventBinding{Transport: config.TransportMQTT, Topic: base + "/poison"}

	log, rt := startOrdered(t, cfg, config.TransportMQTT, func(ctx context.Context) (transport.Transport, error) {
		tr, err := mqtt.New(mcfg, watermill.NopLogger{})
		if err != nil {
			return nil, err
		}
		return tr, tr.Open(ctx)
	}, keys*perKey)

	pub, err := mqtt.NewPublisher(mcfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var names []string
	for k := range keys {
		names = append(names, fmt.Sprint("d", k))
	}
	for s := 1; s <= perKey; s++ {
		for _, k := range names {
			msg := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(s)))
			if err := pub.Publish(base+"/devices/"+k+"/status", msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	log.wait("ordered on MQTT")
	checkInOrder(t, log.snapshot(), names, perKey)
	if log.most < 2 {
		t.Errorf("at most %d handlers ran at once, want devices in parallel", log.most)
	}
	if err := rt.Stop(context.Background()); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// startOrdered starts a runtime with cfg, whose binding "test" is on the
// transport name that open opens; its handler logs each message's key and
// sequence number and takes up to 2 ms. The runtime stops when the test
// ends.
func startOrdered(t *testing.T, cfg config.Config, name string, open func(context.Context) (transport.Transport, error), want int) (*handledLog, *runtime.Runtime) {
	t.Helper()
	log := newHandledLog(t, want)
	h := ports.HandlerFunc{HandlerName: "test", Func: func(_ context.Context, msg ports.Message) error {
		key, seq := log.begin(msg)
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond) // handler latency, not synchronisation
		log.end(key, seq, true)
		return nil
	}}
	rt, err := runtime.New(runtime.Params{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Transports: []runtime.Opener{{Name: name, Open: open}}, Handlers: []ports.Handler{h}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background()) })
	return log, rt
}
