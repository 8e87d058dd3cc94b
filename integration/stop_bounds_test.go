package integration_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

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
