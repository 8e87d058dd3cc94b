// Package domain holds the business handlers. It imports only the standard
// library and ports; wire formats and brokers are somebody else's business.
package domain

import (
	"math"
	"sort"
	"time"

	"github.com/hexmill/hexmill/ports"
)

// Config is the domain's configuration (the domain section of the service
// configuration).
type Config struct {
	// Thresholds maps a metric to the value above which an alert is raised.
	// A metric not listed is accepted and never alerts.
	Thresholds map[string]float64 `yaml:"thresholds"`
	// ClockSkew is how far ahead of the service's clock a device's clock
	// may be (0: DefaultClockSkew). A status report timed further in the
	// future is refused: stored, it would hide every report of its device
	// until that time came.
	ClockSkew time.Duration `yaml:"clock_skew"`
}

// DefaultClockSkew is Config.ClockSkew's default.
const DefaultClockSkew = 5 * time.Minute

// DefaultConfig is the sample's configuration.
func DefaultConfig() Config {
	return Config{Thresholds: map[string]float64{"temperature": 80, "humidity": 95}, ClockSkew: DefaultClockSkew}
}

// clockSkew is ClockSkew or its default.
func (c Config) clockSkew() time.Duration {
	if c.ClockSkew == 0 {
		return DefaultClockSkew
	}
	return c.ClockSkew
}

// Validate reports a threshold that is not a finite number and a negative
// clock skew.
func (c Config) Validate() error {
	if c.ClockSkew < 0 {
		return &ports.FieldError{Field: "clock_skew", Fix: "must be a positive duration, such as 5m"}
	}
	metrics := make([]string, 0, len(c.Thresholds))
	for m := range c.Thresholds {
		metrics = append(metrics, m)
	}
	sort.Strings(metrics)
	for _, m := range metrics {
		if m == "" {
			return &ports.FieldError{Field: "thresholds", Fix: "a metric name must not be empty"}
		}
		if v := c.Thresholds[m]; math.IsNaN(v) || math.IsInf(v, 0) {
			return &ports.FieldError{Field: "thresholds." + m, Fix: "must be a finite number"}
		}
	}
	return nil
}
