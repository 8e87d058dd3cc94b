// Package testservice is the framework's own service, which the
// end-to-end tests and the benchmark run as a real process
// (cmd/testservice) and integration tests may run in-process: telemetry
// in, an AlertRaised for every reading above its threshold out. It is the
// framework's, not a fork's sample, so that a fork that deletes the sample
// keeps those tests; and not internal, so that the benchmark in the tools
// module (tools/) can run it too.
package testservice

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"go.uber.org/fx"

	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// Service is the test service: the telemetry handler (binding
// handlers.telemetry, on memory by default), AlertRaised (events.AlertRaised)
// and its section domain.thresholds; the device status handler (binding
// handlers.device-status) and DeviceStatusChanged, its store on PostgreSQL
// when the service has the postgres section, in memory otherwise.
func Service() app.Service {
	return app.Service{
		Name: "hexmill",
		Defaults: func(c *config.Config) {
			c.Handlers["telemetry"] = config.Binding{Transport: config.TransportMemory, Topic: "devices.telemetry"}
			c.Events["AlertRaised"] = config.EventBinding{Transport: config.TransportMemory, Topic: "alerts"}
			c.Handlers[StatusHandlerName] = config.Binding{Transport: config.TransportMemory, Topic: "devices.status"}
			c.Events["DeviceStatusChanged"] = config.EventBinding{Transport: config.TransportMemory, Topic: "devices.status-changed"}
		},
		Options: []fx.Option{
			app.AsConfig("domain", func() thresholds { return thresholds{} }),
			app.AsHandler(newTelemetryHandler),
			statusOptions(),
		},
	}
}

// thresholds is the domain section: a reading above its metric's
// threshold raises an alert; a status report timed more than clock_skew
// (default 5m) ahead of the service's clock is refused (the sample's
// domain.Config). handler_latency, when set, makes the telemetry handler
// take a random time up to it per message, as real work would (the
// ordered end-to-end test).
type thresholds struct {
	Thresholds     map[string]float64 `yaml:"thresholds"`
	ClockSkew      time.Duration      `yaml:"clock_skew"`
	HandlerLatency time.Duration      `yaml:"handler_latency"`
}

// clockSkew is ClockSkew or its default.
func (t thresholds) clockSkew() time.Duration {
	if t.ClockSkew == 0 {
		return 5 * time.Minute
	}
	return t.ClockSkew
}

func (t thresholds) Validate() error {
	if t.ClockSkew < 0 {
		return &ports.FieldError{Field: "clock_skew", Fix: "must be a positive duration, such as 5m"}
	}
	if t.HandlerLatency < 0 {
		return &ports.FieldError{Field: "handler_latency", Fix: "must be 0 (none) or a positive duration, such as 20ms"}
	}
	for m, v := range t.Thresholds {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return &ports.FieldError{Field: "thresholds." + m, Fix: "must be a finite number"}
		}
	}
	return nil
}

// telemetry is what a device reports.
type telemetry struct {
	DeviceID string             `json:"device_id,omitempty"`
	Readings map[string]float64 `json:"readings"`
	At       time.Time          `json:"at"`
}

// alertRaised says a reading was above its threshold.
type alertRaised struct {
	DeviceID  string    `json:"device_id"`
	Metric    string    `json:"metric"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	At        time.Time `json:"at"`
}

func (alertRaised) EventType() string { return "AlertRaised" }

func newTelemetryHandler(cfg thresholds, pub ports.Publisher) ports.Handler {
	return ports.JSONHandler("telemetry", func(ctx context.Context, t telemetry, md ports.Metadata) error {
		if cfg.HandlerLatency > 0 {
			select {
			case <-time.After(rand.N(cfg.HandlerLatency + 1)):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		deviceID, err := deviceOf(t.DeviceID, md)
		if err != nil {
			return ports.Invalid(fmt.Errorf("telemetry: %w", err))
		}
		t.DeviceID = deviceID
		if t.DeviceID == "" {
			return ports.Invalid(errors.New("telemetry: device_id is missing (in the payload or the topic)"))
		}
		if len(t.Readings) == 0 {
			return ports.Invalid(errors.New("telemetry: readings is empty: report at least one metric"))
		}
		if t.At.IsZero() {
			t.At = time.Now()
		}
		var alerts []ports.Event
		for _, m := range slices.Sorted(maps.Keys(t.Readings)) {
			if limit, ok := cfg.Thresholds[m]; ok && t.Readings[m] > limit {
				alerts = append(alerts, alertRaised{DeviceID: t.DeviceID, Metric: m, Value: t.Readings[m], Threshold: limit, At: t.At})
			}
		}
		if len(alerts) == 0 {
			return nil
		}
		if err := pub.Publish(ctx, alerts...); err != nil {
			return fmt.Errorf("telemetry: %w", err)
		}
		return nil
	}, ports.Strict(), ports.Emits(alertRaised{})) // the end-to-end tests send an unknown field as bad input
}

// deviceOf is the device a message is about: the topic's (the device_id
// attribute), which the payload's device ID, if any, must match; else the
// payload's (the sample's domain.deviceOf).
func deviceOf(payloadID string, md ports.Metadata) (string, error) {
	topicID := md.Attributes["device_id"]
	switch {
	case topicID == "":
		return payloadID, nil
	case payloadID != "" && payloadID != topicID:
		return "", fmt.Errorf("device_id %q in the payload contradicts the topic's %q: a device reports for itself only", payloadID, topicID)
	}
	return topicID, nil
}
