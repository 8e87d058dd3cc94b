package config_test

import (
	"strings"
	"testing"

	"github.com/hexmill/hexmill/app/config"
)

// A plaintext credential to a host that is not loopback fails the load
// with one error naming the setting, its variable and the fix; the escape
// hatches (and insecure_skip_verify) of the sections in use are listed by
// Warnings, for the start log.
func TestPlaintextRefusedAndWarned(t *testing.T) {
	p := config.EnvPrefix(testName)
	onRabbit := env{p + "HANDLERS_TELEMETRY_TRANSPORT": "rabbitmq", p + "POISON_TRANSPORT": "rabbitmq"}
	onMQTT := env{p + "HANDLERS_TELEMETRY_TRANSPORT": "mqtt", p + "POISON_TRANSPORT": "mqtt"}
	with := func(base env, kv ...string) env {
		e := env{}
		for k, v := range base {
			e[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			e[p+kv[i]] = kv[i+1]
		}
		return e
	}
	for _, tc := range []struct {
		name     string
		env      env
		refused  string   // the error's start; "" when it loads
		warnings []string // settings warned about
	}{
		{name: "defaults", env: env{}},
		{name: "rabbitmq amqp to a remote host", env: with(onRabbit, "TRANSPORTS_RABBITMQ_URL", "amqp://app@rabbit.example.com:5672/"),
			refused: "transports.rabbitmq.url (" + p + "TRANSPORTS_RABBITMQ_URL)"},
		{name: "rabbitmq allow_plaintext", env: with(onRabbit, "TRANSPORTS_RABBITMQ_URL", "amqp://app@rabbit.example.com:5672/", "TRANSPORTS_RABBITMQ_ALLOW_PLAINTEXT", "true"),
			warnings: []string{"transports.rabbitmq.allow_plaintext"}},
		{name: "rabbitmq allow_plaintext, rabbitmq unused", env: env{p + "TRANSPORTS_RABBITMQ_ALLOW_PLAINTEXT": "true"}},
		{name: "mqtt password to a remote host", env: with(onMQTT, "TRANSPORTS_MQTT_SERVERS", "mqtt://broker.example.com:1883", "TRANSPORTS_MQTT_USERNAME", "u", "TRANSPORTS_MQTT_PASSWORD", "hunter2"),
			refused: "transports.mqtt.servers"},
		{name: "mqtt insecure_skip_verify", env: with(onMQTT, "TRANSPORTS_MQTT_SERVERS", "mqtts://broker.example.com:8883", "TRANSPORTS_MQTT_TLS_INSECURE_SKIP_VERIFY", "true"),
			warnings: []string{"transports.mqtt.tls.insecure_skip_verify"}},
		{name: "postgres sslmode disable to a remote host", env: env{p + "POSTGRES_URL": "postgres://app@db.example.com/app?sslmode=disable"},
			refused: "postgres.url (" + p + "POSTGRES_URL)"},
		{name: "postgres allow_plaintext", env: env{p + "POSTGRES_URL": "postgres://app@db.example.com/app?sslmode=disable", p + "POSTGRES_ALLOW_PLAINTEXT": "true"},
			warnings: []string{"postgres.allow_plaintext"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := load(tc.env)
			if tc.refused != "" {
				if err == nil || !strings.HasPrefix(err.Error(), "config: "+tc.refused) || !strings.Contains(err.Error(), "allow_plaintext: true") ||
					strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("got %v, want one line starting with %q naming allow_plaintext", err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range l.Warnings() {
				got = append(got, w.Setting)
			}
			if strings.Join(got, ",") != strings.Join(tc.warnings, ",") {
				t.Fatalf("warnings %v, want %v", got, tc.warnings)
			}
		})
	}
}
