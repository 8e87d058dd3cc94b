package integration_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/eclipse/paho.golang/paho"

	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/load"
)

// The outbox relay publishing to MQTT when the broker stalls (takes the
// connection, never answers): the relay's Stop returns when the stop's
// context ends, because its publish ends with the message's context, and
// the publisher's Close returns within close_timeout; the rows stay for
// the next relay.
func TestRelayStopMQTTStalled(t *testing.T) {
	run := load.NewRunID()
	db := integration.PostgresSchema(t, postgres.Config{URL: integration.PostgresURL(t), Schema: "stop_" + run})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := db.Migrate(ctx, postgres.FrameworkComponent, postgres.Migrations()); err != nil {
		t.Fatal(err)
	}
	proxy := integration.NewProxy(t, strings.TrimPrefix(integration.MQTTURL(t), "mqtt://"))
	cfg := mqtt.Config{
		Servers: []string{"mqtt://" + proxy.Addr()}, ClientID: "stop-" + run + "-{conn}-{n}",
		PublishTimeout: time.Minute, KeepAlive: time.Minute, CloseTimeout: time.Second,
	}
	pub, err := mqtt.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	topic := "hexmill/test/stop-" + run
	if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("connected"))); err != nil {
		t.Fatal(err)
	}
	relay, err := postgres.NewRelay(db, postgres.RelayConfig{Publishers: map[string]message.Publisher{"mqtt": pub}, PollInterval: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	proxy.Stall(true)
	out, err := postgres.NewOutboxPublisher("mqtt")
	if err != nil {
		t.Fatal(err)
	}
	err = db.InTx(ctx, func(ctx context.Context) error {
		for range 3 {
			msg := message.NewMessage(watermill.NewUUID(), []byte("event"))
			msg.SetContext(ctx)
			if err := out.Publish(topic, msg); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	relay.Start()
	if !proxy.AwaitHolding(30 * time.Second) {
		t.Fatal("the relay's publish did not reach the stalled proxy within 30 s")
	}

	const bound = time.Second
	stopCtx, stopCancel := context.WithTimeout(context.Background(), bound)
	defer stopCancel()
	start := time.Now()
	stopErr := relay.Stop(stopCtx)
	stopped := time.Since(start)
	start = time.Now()
	closeErr := pub.Close()
	closed := time.Since(start)
	t.Logf("relay Stop: %s (%v); publisher Close: %s (%v)", stopped.Round(time.Millisecond), stopErr,
		closed.Round(time.Millisecond), closeErr)
	if stopped > bound+5*time.Second {
		t.Errorf("the relay's Stop took %s with MQTT stalled; want its context's %s", stopped, bound)
	}
	if closed > cfg.CloseTimeout+5*time.Second {
		t.Errorf("the publisher's Close took %s with MQTT stalled; want close_timeout %s", closed, cfg.CloseTimeout)
	}
	var rows int
	if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM hexmill_outbox`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 3 {
		t.Errorf("%d rows in the outbox; want the 3 never confirmed", rows)
	}
}

// SIGTERM while the MQTT broker takes no more bytes from the service (it
// still delivers): handlers wait for the PUBACK of the events they
// publish over MQTT. The stop drains until drain_timeout, then the
// handlers' contexts end, their publishes with them, their messages go
// back to the broker, and every connection closes within close_timeout:
// the process exits 0 within drain_timeout + 5 s, never at fx's stop
// timeout (drain_timeout + 15 s), however long publish_timeout is (30 s).
func TestE2EStopMQTTStalled(t *testing.T) {
	e := newE2EEnv(t)
	proxy := integration.NewProxy(t, e.mosquitto.Addr())
	e.mqttAddr = proxy.Addr()
	e.extraHandlers = `  device-status:
    transport: mqtt
    topic: e2e/` + e.run + `/+/status
`
	e.extraEvents = `  DeviceStatusChanged:
    transport: mqtt
    topic: e2e/` + e.run + `/status-changed
`
	e.checker(15 * time.Second) // AlertRaised's queue, which the start checks
	svc := e.startService("r0")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	proxy.StallUp(true)
	pub := rawMQTTClient(t, ctx, e.mosquitto.Addr(), "e2e-stop-"+e.run)
	for i := range 4 {
		payload := fmt.Sprintf(`{"device_id":"d%d","status":"online","at":%q}`, i, time.Now().UTC().Format(time.RFC3339Nano))
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "e2e/" + e.run + "/d/status", QoS: 1, Payload: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
	}
	// The handlers' DeviceStatusChanged publishes reach the stalled proxy.
	if !proxy.AwaitHolding(30 * time.Second) {
		t.Fatal("no event publish reached the stalled proxy within 30 s")
	}
	start := time.Now()
	svc.signal(t, syscall.SIGTERM)
	err := svc.Wait()
	stopped := time.Since(start)
	t.Logf("SIGTERM with MQTT stalled: %v after %s (drain timeout %s)", err, stopped.Round(time.Millisecond), e.drainTimeout)
	if code := exitCode(err); code != 0 {
		t.Errorf("exit after SIGTERM: %v, want status 0", err)
	}
	if limit := e.drainTimeout + 5*time.Second; stopped > limit {
		t.Errorf("stop took %s, longer than drain_timeout + 5 s (%s)", stopped, limit)
	}
}
