package config_test

import (
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hexmill/hexmill/adapters/aliyun"
	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/adapters/rabbitmq"
	"github.com/hexmill/hexmill/adapters/transport/secret"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// env is a fake environment for Load.
type env = map[string]string

// The test service stands for a service on the framework: two handlers,
// two events, and sections of its own (domain, demo).
const testName = "hexmill"

var envConfigFile = config.EnvConfigFile(testName)

type testDomain struct {
	Thresholds map[string]float64 `yaml:"thresholds"`
}

func (d testDomain) Validate() error {
	for _, m := range slices.Sorted(maps.Keys(d.Thresholds)) {
		if v := d.Thresholds[m]; math.IsNaN(v) || math.IsInf(v, 0) {
			return &ports.FieldError{Field: "thresholds." + m, Fix: "must be a finite number"}
		}
	}
	return nil
}

type testDemo struct {
	Enabled  *bool         `yaml:"enabled"`
	Interval time.Duration `yaml:"interval"`
}

func (d testDemo) Validate() error {
	if d.Interval <= 0 {
		return &ports.FieldError{Field: "interval", Fix: "must be a positive duration, e.g. 1s"}
	}
	return nil
}

func testDefaults(c *config.Config) {
	c.Handlers["telemetry"] = config.Binding{Transport: config.TransportMemory, Topic: "devices.telemetry", Group: testName}
	c.Handlers["device-status"] = config.Binding{Transport: config.TransportMemory, Topic: "devices.status", Group: testName}
	c.Events["AlertRaised"] = config.EventBinding{Transport: config.TransportMemory, Topic: "alerts"}
	c.Events["DeviceStatusChanged"] = config.EventBinding{Transport: config.TransportMemory, Topic: "devices.status-changed"}
}

// transportSections are the sections of the transports the framework
// brings, as its fx modules give them.
func transportSections() []config.Section {
	return []config.Section{
		{Path: "transports.memory", Value: &memory.Config{QueueLimit: memory.DefaultQueueLimit}, Transport: config.TransportMemory},
		{Path: "transports.mqtt", Value: &mqtt.Config{}, Transport: config.TransportMQTT},
		{Path: "transports.rabbitmq", Value: &rabbitmq.Config{}, Transport: config.TransportRabbitMQ},
		{Path: "transports.aliyun", Value: &aliyun.Config{}, Transport: config.TransportAliyun},
	}
}

// loaded is a configuration with the test service's sections.
type loaded struct {
	config.Config
	Domain *testDomain
	Demo   *testDemo
}

func load(e env) (loaded, error) {
	l := loaded{
		Domain: &testDomain{Thresholds: map[string]float64{"temperature": 80, "humidity": 95}},
		Demo:   &testDemo{Interval: time.Second},
	}
	var err error
	l.Config, err = config.Load(testName, testDefaults, e, append(transportSections(),
		config.Section{Path: "domain", Value: l.Domain},
		config.Section{Path: "demo", Value: l.Demo})...)
	return l, err
}

// writeYAML writes a config file and returns an env naming it.
func writeYAML(t *testing.T, yaml string) env {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hexmill.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return env{envConfigFile: path}
}

// A fork's service reading FLEET_CONFIG names the template's
// HEXMILL_CONFIG, set in its stead, instead of ignoring it.
func TestLoadNamesTheTemplatesConfigVariable(t *testing.T) {
	_, err := config.Load("fleet", nil, map[string]string{"HEXMILL_CONFIG": "fleet.yaml"})
	var fe *ports.FieldError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "HEXMILL_CONFIG is set but this service reads FLEET_CONFIG") {
		t.Fatalf("Load = %v, want a *ports.FieldError naming HEXMILL_CONFIG and FLEET_CONFIG", err)
	}
	if _, err := config.Load("fleet", nil, map[string]string{"HEXMILL_CONFIG": "x", "FLEET_CONFIG": ""}); err == nil || !strings.Contains(err.Error(), "FLEET_CONFIG") {
		t.Fatalf("Load with an empty FLEET_CONFIG = %v, want the same error", err)
	}
}

func TestLoadDefaults(t *testing.T) {
	tests := []struct {
		name string
		env  env
	}{
		{"no environment", env{}},
		{"empty config file variable", env{envConfigFile: ""}},
		{"empty file", writeYAML(t, "")},
		{"comment-only file", writeYAML(t, "# nothing here\n")},
		{"unrelated variables", env{"HOME": "/root", "HEXMILL": "x", "HEXMILL_": "y", "HEXMILL_TEST_RABBITMQ_URL": "amqp://x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := load(tt.env)
			if err != nil {
				t.Fatalf("Load() = %v, want the defaults", err)
			}
			def := config.Default(testName)
			if cfg.Service != def.Service || cfg.DrainTimeout != def.DrainTimeout || !reflect.DeepEqual(cfg.Retry, def.Retry) || cfg.Log != def.Log {
				t.Errorf("Load() = %+v, want the defaults %+v", cfg, def)
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("loaded defaults do not validate: %v", err)
			}
			for _, name := range []string{"telemetry", "device-status"} {
				b, ok := cfg.Handlers[name]
				if !ok || b.Transport != config.TransportMemory || b.Concurrency != config.DefaultConcurrency {
					t.Errorf("handlers.%s = %+v, want memory with concurrency %d", name, b, config.DefaultConcurrency)
				}
			}
			if cfg.Poison.Transport != config.TransportMemory || cfg.Poison.Topic != testName+".poison" {
				t.Errorf("poison = %+v, want memory %s.poison with the memory transport only", cfg.Poison, testName)
			}
			if !reflect.DeepEqual(cfg.Domain.Thresholds, map[string]float64{"temperature": 80, "humidity": 95}) {
				t.Errorf("domain = %+v, want the section's defaults", cfg.Domain)
			}
		})
	}
}

// Validate on a Config built in code (no Load, so no defaults filled).
func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *config.Config)
		field  string // "" for valid
	}{
		{name: "defaults", change: func(*config.Config) {}},
		{name: "no handlers", change: func(c *config.Config) { c.Handlers = nil }, field: "handlers"},
		{name: "zero concurrency", change: func(c *config.Config) {
			b := c.Handlers["telemetry"]
			b.Concurrency = 0
			c.Handlers["telemetry"] = b
		}, field: "handlers.telemetry.concurrency"},
		{name: "aliyun binding needs no topic", change: func(c *config.Config) {
			c.Handlers = map[string]config.Binding{"h": {Transport: config.TransportMemory, Topic: "t", Concurrency: 1}}
			b := c.Handlers["h"]
			b.Transport, b.Topic = config.TransportAliyun, ""
			c.Handlers["h"] = b
		}, field: "transports.aliyun"},
		{name: "no events is fine", change: func(c *config.Config) { c.Events = nil }},
		{name: "max_message_bytes below 1 KiB", change: func(c *config.Config) {
			b := c.Handlers["telemetry"]
			b.MaxMessageBytes = 100
			c.Handlers["telemetry"] = b
		}, field: "handlers.telemetry.max_message_bytes"},
		{name: "max_message_bytes 64 KiB", change: func(c *config.Config) {
			b := c.Handlers["telemetry"]
			b.MaxMessageBytes = 64 << 10
			c.Handlers["telemetry"] = b
		}},
		{name: "negative max_handbacks", change: func(c *config.Config) {
			b := c.Handlers["telemetry"]
			b.MaxHandbacks = -1
			c.Handlers["telemetry"] = b
		}, field: "handlers.telemetry.max_handbacks"},
		{name: "negative handler_timeout", change: func(c *config.Config) {
			b := c.Handlers["telemetry"]
			b.HandlerTimeout = -time.Second
			c.Handlers["telemetry"] = b
		}, field: "handlers.telemetry.handler_timeout"},
		{name: "tracing on", change: func(c *config.Config) {
			ratio := 0.1
			c.Tracing = config.TracingConfig{Endpoint: "https://collector.example:4318", Protocol: config.TracingHTTP, Sampling: &ratio}
		}},
		{name: "tracing protocol unknown", change: func(c *config.Config) { c.Tracing.Protocol = "thrift" }, field: "tracing.protocol"},
		{name: "tracing sampling above 1", change: func(c *config.Config) {
			ratio := 2.0
			c.Tracing.Sampling = &ratio
		}, field: "tracing.sampling"},
		{name: "tracing endpoint not a URL", change: func(c *config.Config) { c.Tracing.Endpoint = "127.0.0.1:4317" }, field: "tracing.endpoint"},
		{name: "tracing incoming link", change: func(c *config.Config) { c.Tracing.Incoming = config.IncomingLink }},
		{name: "tracing incoming ignore", change: func(c *config.Config) { c.Tracing.Incoming = config.IncomingIgnore }},
		{name: "tracing incoming unknown", change: func(c *config.Config) { c.Tracing.Incoming = "follow" }, field: "tracing.incoming"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := load(env{})
			if err != nil {
				t.Fatal(err)
			}
			c := l.Config
			tt.change(&c)
			err = c.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ce *ports.FieldError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate() = %v (%T), want a *ports.FieldError on %s", err, err, tt.field)
			}
			if !strings.HasPrefix(ce.Field, tt.field) {
				t.Errorf("FieldError.Field = %q, want %q (error: %v)", ce.Field, tt.field, err)
			}
		})
	}
}

const overrideYAML = `
service: plant-7
drain_timeout: 20s
log:
  level: debug
  format: json
retry:
  max_retries: 5
  initial_interval: 50ms
  max_interval: 1s
  multiplier: 3
handlers:
  telemetry:
    transport: memory
    topic: yaml.telemetry
    group: yaml-group
    concurrency: 4
    topic_params: "{kind}.telemetry"
events:
  AlertRaised:
    transport: memory
    topic: yaml.alerts
domain:
  thresholds:
    temperature: 70
    co2: 1000
demo:
  interval: 5s
`

func TestLoadLayers(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string // "" for no file
		env   env
		check func(t *testing.T, cfg loaded)
	}{
		{
			name: "YAML overrides defaults",
			yaml: overrideYAML,
			check: func(t *testing.T, cfg loaded) {
				eq(t, "service", cfg.Service, "plant-7")
				eq(t, "drain_timeout", cfg.DrainTimeout, 20*time.Second)
				eq(t, "log", cfg.Log, config.LogConfig{Level: "debug", Format: "json"})
				eq(t, "retry", cfg.Retry, config.RetryConfig{MaxRetries: 5, InitialInterval: 50 * time.Millisecond, MaxInterval: time.Second, Multiplier: 3})
				eq(t, "handlers.telemetry", cfg.Handlers["telemetry"], config.Binding{
					Transport: config.TransportMemory, Topic: "yaml.telemetry", Group: "yaml-group", Concurrency: 4, TopicParams: "{kind}.telemetry",
				})
				eq(t, "events.AlertRaised.topic", cfg.Events["AlertRaised"].Topic, "yaml.alerts")
				eq(t, "demo.interval", cfg.Demo.Interval, 5*time.Second)
				// Entries the file does not mention keep their defaults.
				eq(t, "handlers.device-status.topic", cfg.Handlers["device-status"].Topic, "devices.status")
				eq(t, "http_addr", cfg.HTTPAddr, config.Default(testName).HTTPAddr)
				eq(t, "domain.thresholds", cfg.Domain.Thresholds, map[string]float64{"temperature": 70, "humidity": 95, "co2": 1000})
			},
		},
		{
			name: "environment overrides YAML",
			yaml: overrideYAML,
			env: env{
				"HEXMILL_DRAIN_TIMEOUT":                      "3s",
				"HEXMILL_SERVICE":                            "from-env",
				"HEXMILL_HANDLERS_TELEMETRY_TOPIC":           "x",
				"HEXMILL_HANDLERS_DEVICE_STATUS_TRANSPORT":   "memory",
				"HEXMILL_HANDLERS_DEVICE_STATUS_TOPIC":       "env.status",
				"HEXMILL_HANDLERS_DEVICE_STATUS_CONCURRENCY": "2",
				"HEXMILL_DOMAIN_THRESHOLDS_TEMPERATURE":      "50",
				"HEXMILL_DEMO_ENABLED":                       "false",
				"HEXMILL_RETRY_MULTIPLIER":                   "1.5",
				"HEXMILL_LOG_LEVEL":                          "warn",
				"HEXMILL_EVENTS_ALERTRAISED_TOPIC":           "env.alerts",
			},
			check: func(t *testing.T, cfg loaded) {
				eq(t, "drain_timeout", cfg.DrainTimeout, 3*time.Second)
				eq(t, "service", cfg.Service, "from-env")
				eq(t, "handlers.telemetry.topic", cfg.Handlers["telemetry"].Topic, "x")
				eq(t, "handlers.telemetry.group (from YAML)", cfg.Handlers["telemetry"].Group, "yaml-group")
				eq(t, "handlers.device-status.topic", cfg.Handlers["device-status"].Topic, "env.status")
				eq(t, "handlers.device-status.concurrency", cfg.Handlers["device-status"].Concurrency, 2)
				eq(t, "domain.thresholds.temperature", cfg.Domain.Thresholds["temperature"], 50.0)
				eq(t, "domain.thresholds.co2 (from YAML)", cfg.Domain.Thresholds["co2"], 1000.0)
				if cfg.Demo.Enabled == nil || *cfg.Demo.Enabled {
					t.Errorf("demo.enabled = %v, want false", cfg.Demo.Enabled)
				}
				eq(t, "retry.multiplier", cfg.Retry.Multiplier, 1.5)
				eq(t, "retry.max_retries (from YAML)", cfg.Retry.MaxRetries, 5)
				eq(t, "log.level", cfg.Log.Level, "warn")
				eq(t, "log.format (from YAML)", cfg.Log.Format, "json")
				eq(t, "events.AlertRaised.topic", cfg.Events["AlertRaised"].Topic, "env.alerts")
			},
		},
		{
			name: "environment overrides defaults without a file",
			env: env{
				"HEXMILL_HANDLERS_DEVICE_STATUS_TOPIC": "s",
				"HEXMILL_DEMO_ENABLED":                 "true",
				"HEXMILL_DEMO_INTERVAL":                "250ms",
			},
			check: func(t *testing.T, cfg loaded) {
				eq(t, "handlers.device-status.topic", cfg.Handlers["device-status"].Topic, "s")
				eq(t, "demo.interval", cfg.Demo.Interval, 250*time.Millisecond)
				if cfg.Demo.Enabled == nil || !*cfg.Demo.Enabled {
					t.Errorf("demo.enabled = %v, want true", cfg.Demo.Enabled)
				}
			},
		},
		{
			name: "demo.enabled false in YAML stays off",
			yaml: "demo:\n  enabled: false\n",
			check: func(t *testing.T, cfg loaded) {
				if cfg.Demo.Enabled == nil || *cfg.Demo.Enabled {
					t.Errorf("demo.enabled = %v, want false", cfg.Demo.Enabled)
				}
			},
		},
		{
			name: "null in YAML keeps the default",
			yaml: "drain_timeout: ~\nlog:\n",
			check: func(t *testing.T, cfg loaded) {
				eq(t, "drain_timeout", cfg.DrainTimeout, config.Default(testName).DrainTimeout)
				eq(t, "log", cfg.Log, config.Default(testName).Log)
			},
		},
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
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			tt.check(t, cfg)
		})
	}
}

func eq[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

func TestLoadInvalid(t *testing.T) {
	tests := []struct {
		name string
		yaml string // "" for no file
		env  env
		// field is the FieldError's Field; the error must also name its
		// environment variable. want are more substrings (the fix).
		field string
		want  []string
	}{
		{name: "bad duration in env", env: env{"HEXMILL_DRAIN_TIMEOUT": "3x"}, field: "drain_timeout", want: []string{`"3x"`, "duration such as"}},
		{name: "bad duration in YAML", yaml: "drain_timeout: 3x\n", field: "drain_timeout", want: []string{`"3x"`, "duration such as", "line 1"}},
		{name: "duration without unit in YAML", yaml: "retry:\n  max_interval: 10\n", field: "retry.max_interval", want: []string{"duration such as", "line 2"}},
		{name: "zero drain timeout", env: env{"HEXMILL_DRAIN_TIMEOUT": "0s"}, field: "drain_timeout", want: []string{"positive duration"}},
		{name: "negative drain timeout", yaml: "drain_timeout: -1s\n", field: "drain_timeout", want: []string{"positive duration"}},
		{name: "empty service", env: env{"HEXMILL_SERVICE": ""}, field: "service", want: []string{"must not be empty"}},
		{name: "unknown transport in env", env: env{"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT": "kafka"}, field: "handlers.telemetry.transport", want: []string{`"kafka" is not a transport`, "aliyun, memory, mqtt, rabbitmq"}},
		{name: "unknown transport for device-status", env: env{"HEXMILL_HANDLERS_DEVICE_STATUS_TRANSPORT": "nats"}, field: "handlers.device-status.transport", want: []string{`"nats" is not a transport`}},
		{name: "unknown event transport", yaml: "events:\n  AlertRaised:\n    transport: sqs\n    topic: a\n", field: "events.AlertRaised.transport", want: []string{`"sqs"`}},
		{name: "unknown poison transport", env: env{"HEXMILL_POISON_TRANSPORT": "kafka"}, field: "poison.transport", want: []string{"is not a transport"}},
		{name: "poison unset where handlers use a broker", env: env{"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT": "rabbitmq"}, field: "poison.transport", want: []string{"must be set", "handlers.telemetry on rabbitmq", "acked at its source"}},
		{name: "unknown mqtt option", yaml: "handlers:\n  telemetry:\n    transport: mqtt\n    topic: t/+\n    options: {qso: \"1\"}\npoison: {transport: mqtt, topic: p}\n", field: "handlers.telemetry.options", want: []string{"qso"}},
		{name: "bad mqtt qos", env: env{"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT": "mqtt", "HEXMILL_HANDLERS_TELEMETRY_OPTIONS_QOS": "3", "HEXMILL_POISON_TRANSPORT": "mqtt"}, field: "handlers.telemetry.options", want: []string{"3"}},
		{name: "unknown rabbitmq publish option", yaml: "events:\n  AlertRaised:\n    transport: rabbitmq\n    topic: a\n    options: {exchnage: x}\n", field: "events.AlertRaised.options", want: []string{"exchnage", "exchange"}},
		{name: "memory takes no options", env: env{"HEXMILL_HANDLERS_TELEMETRY_OPTIONS_QOS": "1"}, field: "handlers.telemetry.options", want: []string{"memory transport takes no binding options"}},
		{name: "aliyun cannot publish", yaml: "events:\n  AlertRaised:\n    transport: aliyun\n    topic: a\n", field: "events.AlertRaised.options", want: []string{"consumes only"}},
		{name: "an adapter's field error", env: env{"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT": "mqtt", "HEXMILL_POISON_TRANSPORT": "mqtt", "HEXMILL_TRANSPORTS_MQTT_KEEPALIVE": "1500ms"}, field: "transports.mqtt.keepalive", want: []string{"whole seconds"}},
		{name: "unknown message identity", env: env{"HEXMILL_HANDLERS_TELEMETRY_MESSAGE_ID": "hash"}, field: "handlers.telemetry.message_id", want: []string{`"hash"`, "transport", "content"}},
		{name: "typo in a variable", env: env{"HEXMILL_HANDLERS_TELEMETRY_TOPIK": "x"}, field: "environment", want: []string{"HEXMILL_HANDLERS_TELEMETRY_TOPIK sets no setting", "did you mean HEXMILL_HANDLERS_TELEMETRY_TOPIC"}},
		{name: "typo in a top-level variable", env: env{"HEXMILL_DRAIN_TIMOUT": "3s"}, field: "environment", want: []string{"did you mean HEXMILL_DRAIN_TIMEOUT"}},
		{name: "unknown transport section", yaml: "transports:\n  kafka:\n    url: x\n", field: "transports.kafka", want: []string{"not a setting", "transports.rabbitmq", "transports.mqtt"}},
		{name: "typo in a transport section", yaml: "transports:\n  rabitmq:\n    url: x\n", field: "transports.rabitmq", want: []string{"not a setting; did you mean transports.rabbitmq?"}},
		{name: "typo in a service section", yaml: "demmo:\n  enabled: true\n", field: "demmo", want: []string{"did you mean demo?"}},
		{name: "bad option in a transport section", yaml: "transports:\n  rabbitmq:\n    heartbeat: often\n", field: "transports.rabbitmq.heartbeat", want: []string{"duration"}},
		{name: "empty topic", env: env{"HEXMILL_HANDLERS_TELEMETRY_TOPIC": ""}, field: "handlers.telemetry.topic", want: []string{"must name the topic"}},
		{name: "empty event topic", env: env{"HEXMILL_EVENTS_DEVICESTATUSCHANGED_TOPIC": ""}, field: "events.DeviceStatusChanged.topic", want: []string{"must name the topic"}},
		{name: "empty poison topic", env: env{"HEXMILL_POISON_TOPIC": ""}, field: "poison.topic", want: []string{"must name where"}},
		{name: "negative concurrency", env: env{"HEXMILL_HANDLERS_TELEMETRY_CONCURRENCY": "-1"}, field: "handlers.telemetry.concurrency", want: []string{"1 or more"}},
		{name: "negative retries in env", env: env{"HEXMILL_RETRY_MAX_RETRIES": "-1"}, field: "retry.max_retries", want: []string{"0 or more"}},
		{name: "negative retries in YAML", yaml: "retry:\n  max_retries: -2\n", field: "retry.max_retries", want: []string{"0 or more"}},
		{name: "retries not a number in env", env: env{"HEXMILL_RETRY_MAX_RETRIES": "many"}, field: "retry.max_retries", want: []string{`"many"`, "whole number"}},
		{name: "retries not a number in YAML", yaml: "retry:\n  max_retries: lots\n", field: "retry.max_retries", want: []string{`"lots"`, "whole number", "line 2"}},
		{name: "initial interval above max", env: env{"HEXMILL_RETRY_INITIAL_INTERVAL": "5s"}, field: "retry.initial_interval", want: []string{"not above retry.max_interval"}},
		{name: "multiplier below 1", env: env{"HEXMILL_RETRY_MULTIPLIER": "0.5"}, field: "retry.multiplier", want: []string{"1 or more"}},
		{name: "multiplier not a number", env: env{"HEXMILL_RETRY_MULTIPLIER": "double"}, field: "retry.multiplier", want: []string{"want a number"}},
		{name: "log level", env: env{"HEXMILL_LOG_LEVEL": "verbose"}, field: "log.level", want: []string{"debug, info, warn, error"}},
		{name: "log level in YAML", yaml: "log:\n  level: trace\n", field: "log.level", want: []string{"debug, info, warn, error"}},
		{name: "log format", env: env{"HEXMILL_LOG_FORMAT": "xml"}, field: "log.format", want: []string{"text or json"}},
		{name: "demo enabled not a bool", env: env{"HEXMILL_DEMO_ENABLED": "sometimes"}, field: "demo.enabled", want: []string{"true or false"}},
		{name: "demo interval", env: env{"HEXMILL_DEMO_INTERVAL": "0s"}, field: "demo.interval", want: []string{"positive duration"}},
		{name: "unknown top-level YAML key", yaml: "drain_timout: 3s\n", field: "drain_timout", want: []string{"not a setting; did you mean drain_timeout?", "line 1"}},
		{name: "unknown nested YAML key", yaml: "handlers:\n  telemetry:\n    topik: x\n", field: "handlers.telemetry.topik", want: []string{"not a setting", "topic", "line 3"}},
		{name: "unknown YAML key in retry", yaml: "retry:\n  retries: 3\n", field: "retry.retries", want: []string{"not a setting", "max_retries"}},
		{name: "mapping where a value belongs", yaml: "service:\n  name: x\n", field: "service", want: []string{"cannot use a mapping"}},
		{name: "list where a mapping belongs", yaml: "log: [debug]\n", field: "log", want: []string{"cannot use a list", "mapping of settings"}},
		{name: "threshold not a number in YAML", yaml: "domain:\n  thresholds:\n    temperature: hot\n", field: "domain.thresholds.temperature", want: []string{`"hot"`, "want a number"}},
		{name: "threshold not a number in env", env: env{"HEXMILL_DOMAIN_THRESHOLDS_TEMPERATURE": "hot"}, field: "domain.thresholds.temperature", want: []string{"want a number"}},
		{name: "threshold not finite", env: env{"HEXMILL_DOMAIN_THRESHOLDS_HUMIDITY": "+Inf"}, field: "domain.thresholds.humidity", want: []string{"finite number"}},
		{name: "topic_params stray brace", env: env{"HEXMILL_HANDLERS_TELEMETRY_TOPIC_PARAMS": "devices/{device_id}/telemetry}"}, field: "handlers.telemetry.topic_params", want: []string{"stray brace"}},
		{name: "topic_params stray brace in YAML", yaml: "handlers:\n  telemetry:\n    transport: memory\n    topic: t\n    topic_params: \"devices/{device_id/x\"\n", field: "handlers.telemetry.topic_params", want: []string{"brace"}},
		{name: "topic_params without a segment", env: env{"HEXMILL_HANDLERS_TELEMETRY_TOPIC_PARAMS": "devices/telemetry"}, field: "handlers.telemetry.topic_params", want: []string{"names no segment"}},
		{name: "idempotent without postgres", env: env{"HEXMILL_HANDLERS_DEVICE_STATUS_IDEMPOTENT": "true"}, field: "handlers.device-status.idempotent", want: []string{"needs PostgreSQL", "postgres.url (HEXMILL_POSTGRES_URL)", "idempotent to false"}},
		{name: "idempotent without postgres in YAML", yaml: "handlers:\n  telemetry:\n    transport: memory\n    topic: t\n    idempotent: true\n", field: "handlers.telemetry.idempotent", want: []string{"needs PostgreSQL"}},
		{name: "idempotent not a bool", env: env{"HEXMILL_HANDLERS_TELEMETRY_IDEMPOTENT": "yes please"}, field: "handlers.telemetry.idempotent", want: []string{"true or false"}},
		{name: "postgres settings while off", env: env{"HEXMILL_POSTGRES_PASSWORD": "hunter2"}, field: "postgres.password", want: []string{"PostgreSQL is off", "set postgres.url"}},
		{name: "postgres retention while off", yaml: "postgres:\n  retention:\n    keep: 24h\n", field: "postgres.retention.keep", want: []string{"PostgreSQL is off"}},
		{name: "postgres password in url", env: env{"HEXMILL_POSTGRES_URL": "postgres://app:hunter2@db/app"}, field: "postgres.url", want: []string{"move it to postgres.password"}},
		{name: "postgres max_conns", env: env{"HEXMILL_POSTGRES_HOST": "db", "HEXMILL_POSTGRES_MAX_CONNS": "1"}, field: "postgres.max_conns", want: []string{"2 or more"}},
		{name: "postgres max_conns not a number", yaml: "postgres:\n  host: db\n  max_conns: many\n", field: "postgres.max_conns", want: []string{"whole number", "line 3"}},
		{name: "postgres unknown key", yaml: "postgres:\n  hots: db\n", field: "postgres.hots", want: []string{"not a setting", "host"}},
		{name: "postgres negative retention", env: env{"HEXMILL_POSTGRES_URL": "postgres://app@db/app", "HEXMILL_POSTGRES_RETENTION_KEEP": "-1h"}, field: "postgres.retention.keep", want: []string{"positive duration"}},
		{name: "postgres negative relay batch", env: env{"HEXMILL_POSTGRES_URL": "postgres://app@db/app", "HEXMILL_POSTGRES_RELAY_BATCH_SIZE": "-1"}, field: "postgres.relay.batch_size", want: []string{"1 or more"}},
		{name: "topic_params duplicate", env: env{"HEXMILL_HANDLERS_TELEMETRY_TOPIC_PARAMS": "{a}/{a}"}, field: "handlers.telemetry.topic_params", want: []string{"appears twice"}},
		// Secrets: refused where they would be logged or dumped, and never
		// echoed (no error here may hold hunter2).
		{name: "postgres password in url query", env: env{"HEXMILL_POSTGRES_URL": "postgres://app@db/app?sslmode=require&password=hunter2"}, field: "postgres.url", want: []string{"password=", "move it to postgres.password"}},
		{name: "postgres sslpassword in url query", env: env{"HEXMILL_POSTGRES_URL": "postgres://app@db/app?sslpassword=hunter2"}, field: "postgres.url", want: []string{"sslpassword="}},
		{name: "postgres url that does not parse", env: env{"HEXMILL_POSTGRES_URL": "postgres://app:hunter2 x@db/app"}, field: "postgres.url", want: []string{"not a URL"}},
		{name: "tracing endpoint with credentials", env: env{"HEXMILL_TRACING_ENDPOINT": "https://user:hunter2@collector:4318"}, field: "tracing.endpoint", want: []string{"credentials", "OTEL_EXPORTER_OTLP_HEADERS"}},
		{name: "tracing endpoint with a user", env: env{"HEXMILL_TRACING_ENDPOINT": "https://hunter2@collector:4318"}, field: "tracing.endpoint", want: []string{"credentials"}},
		{name: "tracing endpoint that does not parse", env: env{"HEXMILL_TRACING_ENDPOINT": "https://user:hunter2 x@collector:4318"}, field: "tracing.endpoint", want: []string{"collector's URL"}},
		{name: "mqtt server that does not parse", env: env{"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT": "mqtt", "HEXMILL_POISON_TRANSPORT": "mqtt", "HEXMILL_TRANSPORTS_MQTT_SERVERS": "mqtt://u:hunter2 x@h:1883"}, field: "transports.mqtt.servers", want: []string{"item 1 does not parse"}},
		{name: "mqtt server without a scheme", env: env{"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT": "mqtt", "HEXMILL_POISON_TRANSPORT": "mqtt", "HEXMILL_TRANSPORTS_MQTT_SERVERS": "u:hunter2@h:1883"}, field: "transports.mqtt.servers", want: []string{"[redacted]"}},
		{name: "rabbitmq url that does not parse", env: env{"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT": "rabbitmq", "HEXMILL_TRANSPORTS_RABBITMQ_URL": "amqp://guest:hunter2 x@h:5672/"}, field: "transports.rabbitmq.url", want: []string{"cannot parse"}},
		{name: "ops negative read timeout", env: env{"HEXMILL_OPS_READ_TIMEOUT": "-1s"}, field: "ops.read_timeout", want: []string{"positive duration"}},
		{name: "memory negative max_queue_bytes", env: env{"HEXMILL_TRANSPORTS_MEMORY_MAX_QUEUE_BYTES": "-1"}, field: "transports.memory.max_queue_bytes", want: []string{"0 (no bound)"}},
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
			_, err := load(e)
			if err == nil {
				t.Fatalf("Load() = nil, want an error on %s", tt.field)
			}
			var ce *ports.FieldError
			if !errors.As(err, &ce) {
				t.Fatalf("Load() = %v (%T), want a *ports.FieldError", err, err)
			}
			if ce.Field != tt.field {
				t.Errorf("FieldError.Field = %q, want %q (error: %v)", ce.Field, tt.field, err)
			}
			if ce.Fix == "" {
				t.Errorf("FieldError.Fix is empty: %v", err)
			}
			msg := err.Error()
			want := append([]string{tt.field}, tt.want...)
			if tt.field != "environment" {
				want = append(want, config.Default(testName).EnvName(tt.field))
			}
			for _, s := range want {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not contain %q", msg, s)
				}
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("error %q shows the secret", msg)
			}
			if strings.Count(msg, "config:") != 1 || strings.Contains(msg, "\n") {
				t.Errorf("error %q is not ONE error on one line", msg)
			}
		})
	}
}

// Errors about the file itself name HEXMILL_CONFIG and say what to do.
func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		yaml string // written to path when not ""
		want []string
	}{
		{name: "missing file", path: filepath.Join(dir, "nope.yaml"), want: []string{envConfigFile, "nope.yaml", "readable YAML file or unset it"}},
		{name: "directory", path: dir, want: []string{envConfigFile}},
		{name: "YAML syntax", path: filepath.Join(dir, "syntax.yaml"), yaml: "log: [debug\n", want: []string{"syntax.yaml", "line", "fix the YAML syntax"}},
		{name: "tab indentation", path: filepath.Join(dir, "tab.yaml"), yaml: "log:\n\tlevel: debug\n", want: []string{"tab.yaml", "fix the YAML syntax"}},
		{name: "not a mapping", path: filepath.Join(dir, "list.yaml"), yaml: "- a\n- b\n", want: []string{"list.yaml", "line 1", "mapping of settings"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.yaml != "" {
				if err := os.WriteFile(tt.path, []byte(tt.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := load(env{envConfigFile: tt.path})
			if err == nil {
				t.Fatal("Load() = nil, want an error")
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestFieldErrorFormat(t *testing.T) {
	tests := []struct {
		field, fix string
		want       string
	}{
		{"drain_timeout", "must be positive", "config: drain_timeout (HEXMILL_DRAIN_TIMEOUT): must be positive"},
		{"handlers.device-status.transport", "x", "config: handlers.device-status.transport (HEXMILL_HANDLERS_DEVICE_STATUS_TRANSPORT): x"},
		{"transports.rabbitmq.url", "y", "config: transports.rabbitmq.url (HEXMILL_TRANSPORTS_RABBITMQ_URL): y"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			err := error(&ports.FieldError{Field: tt.field, Env: config.Default(testName).EnvName(tt.field), Fix: tt.fix})
			if got := err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	tests := map[string]string{
		"drain_timeout":                        "HEXMILL_DRAIN_TIMEOUT",
		"handlers.telemetry.topic":             "HEXMILL_HANDLERS_TELEMETRY_TOPIC",
		"handlers.device-status.transport":     "HEXMILL_HANDLERS_DEVICE_STATUS_TRANSPORT",
		"domain.thresholds.temperature":        "HEXMILL_DOMAIN_THRESHOLDS_TEMPERATURE",
		"events.DeviceStatusChanged.transport": "HEXMILL_EVENTS_DEVICESTATUSCHANGED_TRANSPORT",
	}
	for path, want := range tests {
		t.Run(path, func(t *testing.T) {
			if got := config.Default(testName).EnvName(path); got != want {
				t.Errorf("EnvName(%q) = %q, want %q", path, got, want)
			}
		})
	}
}

// Credentials in the app's own configuration must be secret.String, which
// never prints its value. The adapters' sections (transports.*) are checked
// by their own tests.
func TestConfigCredentialsAreSecret(t *testing.T) {
	secretType := reflect.TypeOf(secret.String(""))
	credential := []string{"password", "secret", "token", "credential", "access_key"}
	var walk func(t *testing.T, typ reflect.Type, path string)
	walk = func(t *testing.T, typ reflect.Type, path string) {
		switch typ.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Map:
			walk(t, typ.Elem(), path+".*")
		case reflect.Struct:
			for _, f := range config.Settings(typ) {
				name := f.Name
				if path == "" && name == "transports" {
					continue
				}
				p := strings.TrimPrefix(path+"."+name, ".")
				for _, c := range credential {
					if strings.Contains(strings.ToLower(name), c) && f.Type != secretType {
						t.Errorf("%s is %s; a credential must be secret.String", p, f.Type)
					}
				}
				walk(t, f.Type, p)
			}
		}
	}
	walk(t, reflect.TypeOf(config.Config{}), "")

	// secret.String itself: what a dump of such a field shows.
	s := secret.String("hunter2")
	for name, got := range map[string]string{"String": s.String(), "GoString": s.GoString()} {
		if strings.Contains(got, "hunter2") {
			t.Errorf("secret.String.%s() = %q shows the value", name, got)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Errorf("Reveal() = %q, want the value", s.Reveal())
	}
}

// POST /inject is on by default only in the zero-config demo: no
// configuration file and every binding on the memory transport; ops.inject
// says otherwise either way. ops.token is a secret.
func TestOpsInjectDefault(t *testing.T) {
	tests := []struct {
		name string
		yaml string // "" for no file
		env  env
		want bool
	}{
		{name: "zero-config demo", want: true},
		{name: "demo from the environment only", env: env{"HEXMILL_HANDLERS_BATTERY_TRANSPORT": "memory", "HEXMILL_HANDLERS_BATTERY_TOPIC": "b"}, want: true},
		{name: "a configuration file", yaml: "drain_timeout: 5s\n", want: false},
		{name: "an empty configuration file", yaml: "\n", want: false},
		{name: "a binding on a broker", env: env{"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT": "rabbitmq"}, want: false},
		{name: "turned off in the demo", env: env{"HEXMILL_OPS_INJECT": "false"}, want: false},
		{name: "turned on with a file", yaml: "ops:\n  inject: true\n", want: true},
		{name: "turned on with a broker", env: env{"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT": "rabbitmq", "HEXMILL_OPS_INJECT": "true"}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := env{}
			if tt.yaml != "" {
				e = writeYAML(t, tt.yaml)
			}
			maps.Copy(e, tt.env)
			l, err := load(e)
			if err != nil {
				t.Fatal(err)
			}
			if got := l.Ops.InjectOn(); got != tt.want {
				t.Errorf("ops.inject = %t, want %t", got, tt.want)
			}
		})
	}

	l, err := load(env{"HEXMILL_OPS_TOKEN": "hunter2"})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "ops.token", l.Ops.Token, secret.String("hunter2"))
	dump, err := l.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(dump), "hunter2") || !strings.Contains(string(dump), "token: '[redacted]'") {
		t.Errorf("the dump does not redact ops.token:\n%s", dump)
	}
	if l.Ops.ReadTimeout <= 0 || l.Ops.WriteTimeout <= 0 || l.Ops.IdleTimeout <= 0 {
		t.Errorf("ops timeouts without defaults: %+v", l.Ops)
	}
}
