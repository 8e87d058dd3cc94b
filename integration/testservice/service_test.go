package testservice_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/integration/testservice"
)

// The test service in-process, as an integration test runs it: a reading
// above its threshold (a map entry the environment creates) raises an
// alert.
func TestServiceInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	broker, alerts := startInProcess(t, ctx, app.Env{
		"HEXMILL_HTTP_ADDR":                     "off",
		"HEXMILL_DOMAIN_THRESHOLDS_TEMPERATURE": "80",
	}, "alerts")
	in := message.NewMessage(watermill.NewUUID(), []byte(`{"device_id":"d1","readings":{"temperature":81,"humidity":99}}`))
	if err := broker.Publish("devices.telemetry", in); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-alerts:
		a.Ack()
		if want := `"metric":"temperature","value":81,"threshold":80`; !strings.Contains(string(a.Payload), want) {
			t.Fatalf("alert %s, want %s", a.Payload, want)
		}
	case <-ctx.Done():
		t.Fatal("no alert")
	}
}

// startInProcess starts the test service with env and reads topic on its
// memory transport; both end with the test.
func startInProcess(t *testing.T, ctx context.Context, env app.Env, topic string) (*memory.Transport, <-chan *message.Message) {
	t.Helper()
	var broker *memory.Transport
	svc := app.New(testservice.Service(), env, fx.Populate(&broker), fx.NopLogger)
	if err := svc.Err(); err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	sub, err := broker.Subscriber(memory.SubscriberConfig{Group: "test", Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	msgs, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return broker, msgs
}
