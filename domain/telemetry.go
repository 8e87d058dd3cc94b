package domain

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hexmill/hexmill/ports"
)

// TelemetryHandlerName is the telemetry handler's binding key.
const TelemetryHandlerName = "telemetry"

// Telemetry is what a device reports at one time: one or more readings.
type Telemetry struct {
	// DeviceID may be left out when the binding takes it from the topic
	// (the device_id attribute); given, it must be the topic's.
	DeviceID string             `json:"device_id,omitempty"`
	Readings map[string]float64 `json:"readings"`
	At       time.Time          `json:"at"`
}

// TelemetryHandler validates telemetry and raises an alert for each reading
// above its metric's threshold.
type TelemetryHandler struct {
	cfg       Config
	publisher ports.Publisher
	clock     ports.Clock
}

// NewTelemetryHandler returns the telemetry handler.
func NewTelemetryHandler(cfg Config, publisher ports.Publisher, clock ports.Clock) *TelemetryHandler {
	return &TelemetryHandler{cfg: cfg, publisher: publisher, clock: clock}
}

// Name implements ports.Handler.
func (h *TelemetryHandler) Name() string { return TelemetryHandlerName }

// Emits implements ports.Emitter: the service checks its bindings at start.
func (h *TelemetryHandler) Emits() []string { return []string{AlertRaisedType} }

// Handle implements ports.Handler.
func (h *TelemetryHandler) Handle(ctx context.Context, msg ports.Message) error {
	var t Telemetry
	if err := ports.DecodeJSONStrict(msg.Payload, &t); err != nil {
		return err
	}
	deviceID, err := deviceOf(t.DeviceID, msg)
	if err != nil {
		return ports.Invalid(fmt.Errorf("telemetry: %w", err))
	}
	t.DeviceID = deviceID
	if err := t.validate(); err != nil {
		return ports.Invalid(err)
	}
	if t.At.IsZero() {
		t.At = h.clock.Now()
	}
	var alerts []ports.Event
	for _, metric := range sortedMetrics(t.Readings) {
		value := t.Readings[metric]
		if threshold, ok := h.cfg.Thresholds[metric]; ok && value > threshold {
			alerts = append(alerts, AlertRaised{DeviceID: t.DeviceID, Metric: metric, Value: value, Threshold: threshold, At: t.At})
		}
	}
	if len(alerts) == 0 {
		return nil
	}
	return h.publisher.Publish(ctx, alerts...)
}

func (t Telemetry) validate() error {
	var errs []error
	if t.DeviceID == "" {
		errs = append(errs, errors.New("device_id is missing (in the payload or the topic)"))
	}
	if len(t.Readings) == 0 {
		errs = append(errs, errors.New("readings is empty: report at least one metric"))
	}
	for _, metric := range sortedMetrics(t.Readings) {
		if metric == "" {
			errs = append(errs, errors.New("readings has an empty metric name"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	return nil
}

func sortedMetrics(readings map[string]float64) []string {
	metrics := make([]string, 0, len(readings))
	for m := range readings {
		metrics = append(metrics, m)
	}
	sort.Strings(metrics)
	return metrics
}
