package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/domain"
	"github.com/hexmill/hexmill/ports"
)

// demoConfig drives the sample telemetry generator (the demo section).
type demoConfig struct {
	// Enabled publishes sample telemetry on the telemetry binding's
	// transport, so a fresh checkout shows the pipeline at work. On by
	// default when every binding is on the in-memory transport.
	Enabled  *bool         `yaml:"enabled"`
	Interval time.Duration `yaml:"interval"`
}

// Validate implements the section's check.
func (c demoConfig) Validate() error {
	if c.Interval <= 0 {
		return &ports.FieldError{Field: "interval", Fix: "must be a positive duration, e.g. 1s"}
	}
	return nil
}

// demo is the demo's wiring: its configuration section and its lifecycle.
var demo = fx.Options(
	app.AsConfig("demo", func() demoConfig { return demoConfig{Interval: time.Second} }),
	fx.Invoke(registerDemo),
)

// demo shows the sample pipeline at work on the in-memory transport: it
// publishes telemetry and status reports, and logs every event the
// handlers publish and every message that lands on the poison target.
type demoRun struct {
	cfg    config.Config
	demo   demoConfig
	broker *memory.Transport
	logger *slog.Logger

	cancel context.CancelFunc
	sub    message.Subscriber
	wg     sync.WaitGroup
}

func registerDemo(lc fx.Lifecycle, cfg config.Config, dc demoConfig, broker *memory.Transport, logger *slog.Logger) {
	if on := dc.Enabled == nil && cfg.OnlyMemory() || dc.Enabled != nil && *dc.Enabled; !on {
		return
	}
	d := &demoRun{cfg: cfg, demo: dc, broker: broker, logger: logger.With("component", "demo")}
	lc.Append(fx.Hook{OnStart: d.start, OnStop: d.stop})
}

func (d *demoRun) start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	sub, err := d.broker.Subscriber(memory.SubscriberConfig{Handler: "demo-log", Group: "demo-log", Concurrency: 16})
	if err != nil {
		cancel()
		return err
	}
	d.sub = sub
	watch := map[string]string{} // memory topic -> what lands there
	for eventType := range d.cfg.Events {
		if e := d.cfg.Events[eventType]; e.Transport == config.TransportMemory {
			watch[e.Topic] = eventType
		}
	}
	if d.cfg.Poison.Transport == config.TransportMemory {
		watch[d.cfg.Poison.Topic] = "poison"
	}
	for topic, kind := range watch {
		msgs, err := d.sub.Subscribe(ctx, topic)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		d.wg.Add(1)
		go d.log(kind, msgs)
	}
	d.wg.Add(1)
	go d.generate(ctx)
	d.logger.Info("demo on: publishing sample telemetry; inject your own with POST /inject/telemetry", "interval", d.demo.Interval)
	return nil
}

func (d *demoRun) stop(context.Context) error {
	d.cancel()
	err := d.sub.Close()
	d.wg.Wait()
	return err
}

func (d *demoRun) log(kind string, msgs <-chan *message.Message) {
	defer d.wg.Done()
	for msg := range msgs {
		if kind == "poison" {
			d.logger.Warn("poison", "reason", clip(msg.Metadata.Get(middleware.ReasonForPoisonedKey)), "handler", msg.Metadata.Get(middleware.PoisonedHandlerKey), "payload", clip(string(msg.Payload)))
		} else {
			d.logger.Info("event", "type", kind, "payload", clip(string(msg.Payload)))
		}
		msg.Ack()
	}
}

// maxLoggedPayload bounds what the demo logs of a payload: it may be an
// injected body of anyone's choosing, up to a MiB.
const maxLoggedPayload = 512

// clip is s cut to maxLoggedPayload bytes, saying how long it was.
func clip(s string) string {
	if len(s) <= maxLoggedPayload {
		return s
	}
	return fmt.Sprintf("%s... (%d bytes)", strings.ToValidUTF8(s[:maxLoggedPayload], ""), len(s))
}

func (d *demoRun) generate(ctx context.Context) {
	defer d.wg.Done()
	telemetry, okT := d.cfg.Handlers[domain.TelemetryHandlerName]
	status, okS := d.cfg.Handlers[domain.DeviceStatusHandlerName]
	ticker := time.NewTicker(d.demo.Interval)
	defer ticker.Stop()
	for n := 0; ; n++ {
		device := fmt.Sprintf("dev-%d", n%5+1)
		now := time.Now().UTC()
		if okT && telemetry.Transport == config.TransportMemory {
			t := domain.Telemetry{
				DeviceID: device, At: now,
				Readings: map[string]float64{"temperature": 60 + float64(rand.IntN(300))/10, "humidity": float64(30 + rand.IntN(50))},
			}
			d.publish(telemetry.Topic, t)
			d.logger.Info("telemetry sent", "device_id", device, "temperature", t.Readings["temperature"])
		}
		if okS && status.Transport == config.TransportMemory && n%7 == 0 {
			report := domain.StatusReport{DeviceID: device, Status: []string{"online", "offline"}[n/7%2], At: now}
			d.publish(status.Topic, report)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (d *demoRun) publish(topic string, v any) {
	payload, err := json.Marshal(v)
	if err != nil {
		d.logger.Error("demo: encode", "err", err)
		return
	}
	if err := d.broker.Publish(topic, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
		d.logger.Error("demo: publish", "topic", topic, "err", err)
	}
}
