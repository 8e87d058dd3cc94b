package config_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hexmill/hexmill/ports"
)

// retry.delayed and its binding override load from YAML and the
// environment, and a setting that cannot work names itself and the fix.
func TestLoadDelayedRetries(t *testing.T) {
	const pg = "postgres:\n  url: postgres://localhost/x\n"
	const poison = "poison: {transport: rabbitmq, topic: p}\n"
	tests := []struct {
		name    string
		yaml    string
		env     env
		field   string // "" valid
		fix     string
		delayed map[string][]time.Duration // handler -> its delays, when valid
	}{
		{name: "rabbitmq natively", yaml: poison + "handlers:\n  telemetry: {transport: rabbitmq, topic: q}\n  device-status: {transport: rabbitmq, topic: s}\nretry:\n  delayed: [30s, 5m, 30m]\n",
			delayed: map[string][]time.Duration{"telemetry": {30 * time.Second, 5 * time.Minute, 30 * time.Minute}}},
		{name: "binding override turns them off", yaml: poison + "retry:\n  delayed: [1s]\nhandlers:\n  telemetry: {transport: memory, topic: t, retry_delayed: []}\n  device-status: {transport: rabbitmq, topic: s}\n",
			delayed: map[string][]time.Duration{"telemetry": {}, "device-status": {time.Second}}},
		{name: "memory with the store", yaml: pg + "retry:\n  delayed: [1s, 2s]\n  delay_store: postgres\nhandlers:\n  telemetry: {transport: memory, topic: t, retry_delayed: []}\n",
			delayed: map[string][]time.Duration{"telemetry": {}, "device-status": {time.Second, 2 * time.Second}}},
		{name: "from the environment", env: env{"HEXMILL_RETRY_DELAYED": "500ms, 1s", "HEXMILL_RETRY_DELAY_STORE": "postgres", "HEXMILL_POSTGRES_URL": "postgres://localhost/x"},
			delayed: map[string][]time.Duration{"telemetry": {500 * time.Millisecond, time.Second}}},
		{name: "memory without a store", yaml: "retry:\n  delayed: [1s]\n", field: "retry.delayed", fix: "set retry.delay_store: postgres"},
		{name: "mqtt binding override without a store", yaml: "handlers:\n  telemetry: {transport: mqtt, topic: t, retry_delayed: [1s]}\n  device-status: {transport: rabbitmq, topic: s}\n",
			field: "handlers.telemetry.retry_delayed", fix: "cannot delay a message itself"},
		{name: "store without postgres", yaml: "retry:\n  delayed: [1s]\n  delay_store: postgres\n", field: "retry.delay_store", fix: "needs the postgres section"},
		{name: "unknown store", yaml: "retry:\n  delay_store: redis\n", field: "retry.delay_store", fix: `"redis" is not a delay store`},
		{name: "zero delay", yaml: "retry:\n  delayed: [1s, 0s]\n", field: "retry.delayed", fix: "item 2: want a positive duration"},
		{name: "sub-millisecond delay", env: env{"HEXMILL_HANDLERS_TELEMETRY_RETRY_DELAYED": "1500us"}, field: "handlers.telemetry.retry_delayed", fix: "finer than a millisecond"},
		{name: "bad environment list", env: env{"HEXMILL_RETRY_DELAYED": "1s,soon"}, field: "retry.delayed", fix: "comma-separated durations"},
		{name: "negative poll interval", yaml: "retry:\n  delay_poll_interval: -1s\n", field: "retry.delay_poll_interval", fix: "positive duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := env{}
			if tt.yaml != "" {
				e = writeYAML(t, tt.yaml)
			}
			for k, v := range tt.env {
				e[k] = v
			}
			cfg, err := load(e)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Load = %v, want nil", err)
				}
				for h, want := range tt.delayed {
					if got := cfg.DelayedRetries(h); !slices.Equal(got, want) {
						t.Errorf("DelayedRetries(%s) = %v, want %v", h, got, want)
					}
				}
				return
			}
			var fe *ports.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !strings.Contains(err.Error(), tt.fix) {
				t.Fatalf("Load = %v, want a FieldError on %s saying %q", err, tt.field, tt.fix)
			}
		})
	}
}
