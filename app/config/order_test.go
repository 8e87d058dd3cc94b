package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

func TestParseOrderKey(t *testing.T) {
	attrs := map[string]string{"device_id": "d1", "site": "s1", "empty": ""}
	lookup := func(n string) (string, bool) { v, ok := attrs[n]; return v, ok }
	tests := []struct {
		template, topicParams string
		wantErr               string // "" for none
		key                   string
		ok                    bool
	}{
		{template: "{device_id}", key: "d1", ok: true},
		{template: "{site}/{device_id}", topicParams: "sites/{site}/devices/{device_id}", key: "s1/d1", ok: true},
		{template: "dev-{device_id}!", key: "dev-d1!", ok: true},
		{template: "{device_id}", topicParams: "devices/{device_id}/status", key: "d1", ok: true},
		{template: "{tenant}", topicParams: "devices/{device_id}/status", ok: false}, // metadata, absent here
		{template: "{missing}", ok: false},
		{template: "{empty}", ok: false},
		{template: "{site}/{missing}", ok: false},
		{template: "{devce_id}", topicParams: "devices/{device_id}/status", wantErr: "did you mean {device_id}"},
		{template: "devices", wantErr: "names no attribute"},
		{template: "{device_id", wantErr: "stray or empty brace"},
		{template: "{}", wantErr: "stray or empty brace"},
		{template: "{device id}", wantErr: "stray or empty brace"},
	}
	for _, tt := range tests {
		t.Run(tt.template, func(t *testing.T) {
			k, err := config.ParseOrderKey(tt.template, tt.topicParams)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseOrderKey(%q) = %v, want an error containing %q", tt.template, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			key, ok := k.Render(lookup)
			if ok != tt.ok || key != tt.key {
				t.Fatalf("Render = %q, %v; want %q, %v", key, ok, tt.key, tt.ok)
			}
		})
	}
}

func TestOrderConfig(t *testing.T) {
	const base = "handlers:\n  device-status:\n    transport: %s\n    topic: devices/+/status\n    topic_params: devices/{device_id}/status\n    concurrency: 8\n"
	yaml := func(transport, extra string) string {
		return strings.Replace(base, "%s", transport, 1) + extra
	}
	tests := []struct {
		name, yaml    string
		field         string // "" for a valid configuration
		want          []string
		total, perKey int
	}{
		{name: "defaults", yaml: yaml("memory", "    order_by: \"{device_id}\"\n"), total: 32, perKey: 16},
		{name: "bounds set", yaml: yaml("memory", "    order_by: \"{device_id}\"\n    order_max_waiting: 100\n    order_max_waiting_per_key: 3\n"), total: 100, perKey: 3},
		{name: "rabbitmq one consumer", yaml: yaml("rabbitmq", "    order_by: \"{device_id}\"\n    options: {consumers: \"1\"}\npoison: {transport: rabbitmq, topic: p}\n"), total: 32, perKey: 16},
		{name: "unknown placeholder", yaml: yaml("memory", "    order_by: \"{devise_id}\"\n"), field: "handlers.device-status.order_by", want: []string{"{devise_id} is unknown", "did you mean {device_id}"}},
		{name: "no placeholder", yaml: yaml("memory", "    order_by: device\n"), field: "handlers.device-status.order_by", want: []string{"names no attribute"}},
		{name: "negative total", yaml: yaml("memory", "    order_by: \"{device_id}\"\n    order_max_waiting: -1\n"), field: "handlers.device-status.order_max_waiting", want: []string{"0 (4 per worker"}},
		{name: "negative per key", yaml: yaml("memory", "    order_by: \"{device_id}\"\n    order_max_waiting_per_key: -1\n"), field: "handlers.device-status.order_max_waiting_per_key", want: []string{"0 (16"}},
		{name: "bounds without order_by", yaml: yaml("memory", "    order_max_waiting: 10\n"), field: "handlers.device-status.order_by", want: []string{"set order_by"}},
		{name: "rabbitmq competing consumers", yaml: yaml("rabbitmq", "    order_by: \"{device_id}\"\n    options: {consumers: \"4\"}\npoison: {transport: rabbitmq, topic: p}\n"),
			field: "handlers.device-status.options.consumers", want: []string{"is 4", "per consumer", "consistent-hash"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := load(writeYAML(t, tt.yaml))
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				total, perKey := l.Handlers["device-status"].OrderBounds()
				if total != tt.total || perKey != tt.perKey {
					t.Fatalf("OrderBounds() = %d, %d; want %d, %d", total, perKey, tt.total, tt.perKey)
				}
				return
			}
			var fe *ports.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("Load() = %v, want a FieldError on %s", err, tt.field)
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}
