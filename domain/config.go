// Package domain holds the business handlers. It imports only the standard
// library and ports; wire formats and brokers are somebody else's business.
package domain

import (
	"math"
	"sort"

	"github.com/hexmill/hexmill/ports"
)

// Config is the domain's configuration (the domain section of the service
// configuration).
type Config struct {
	// Thresholds maps a metric to the value above which an alert is raised.
	// A metric not listed is accepted and never alerts.
	Thresholds map[string]float64 `yaml:"thresholds"`
}

// DefaultConfig is the sample's configuration.
func DefaultConfig() Config {
	return Config{Thresholds: map[string]float64{"temperature": 80, "humidity": 95}}
}

// Validate reports a threshold that is not a finite number.
func (c Config) Validate() error {
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
