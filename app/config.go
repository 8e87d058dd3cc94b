package app

import (
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hexmill/hexmill/adapters/aliyun"
	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/adapters/rabbitmq"
	"github.com/hexmill/hexmill/domain"
)

// EnvPrefix starts every environment variable the service reads.
const EnvPrefix = "HEXMILL_"

// EnvConfigFile names the optional YAML file; environment variables override
// what it says.
const EnvConfigFile = EnvPrefix + "CONFIG"

// Config is the whole service configuration. Every field can be set in the
// YAML file (by its yaml name) and overridden by an environment variable:
// HEXMILL_ + the YAML path in upper case joined by "_", with "-" as "_".
// For example transports.rabbitmq.url is HEXMILL_TRANSPORTS_RABBITMQ_URL and
// handlers.telemetry.transport is HEXMILL_HANDLERS_TELEMETRY_TRANSPORT.
type Config struct {
	// Service names this service in logs, client identifiers and metrics.
	Service string `yaml:"service"`
	// HTTPAddr is where /healthz, /readyz and /metrics listen; "off" disables.
	HTTPAddr string `yaml:"http_addr"`
	// DrainTimeout bounds how long stop waits for in-flight handlers before
	// it hands their messages back to the broker.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	Log          LogConfig     `yaml:"log"`
	Retry        RetryConfig   `yaml:"retry"`
	// Tracing exports OpenTelemetry spans over OTLP; off by default.
	Tracing TracingConfig `yaml:"tracing"`
	// Poison is where a message goes after its last retry, or at once when
	// its handler says the input is invalid.
	Poison EventBinding `yaml:"poison"`
	// Demo publishes sample telemetry on the telemetry binding's transport,
	// so a fresh checkout shows the pipeline at work. On by default with the
	// in-memory transport only.
	Demo DemoConfig `yaml:"demo"`

	Transports TransportsConfig `yaml:"transports"`
	// Handlers binds each handler, by name, to where its messages come from.
	Handlers map[string]Binding `yaml:"handlers"`
	// Events binds each outgoing event type to where it is published.
	Events map[string]EventBinding `yaml:"events"`

	Domain domain.Config `yaml:"domain"`
}

// LogConfig sets up log/slog.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

// RetryConfig is the runtime's retry of a failing handler, with exponential
// backoff, before the message goes to the poison target.
type RetryConfig struct {
	MaxRetries      int           `yaml:"max_retries"`
	InitialInterval time.Duration `yaml:"initial_interval"`
	MaxInterval     time.Duration `yaml:"max_interval"`
	Multiplier      float64       `yaml:"multiplier"`
}

// DemoConfig drives the sample telemetry generator.
type DemoConfig struct {
	Enabled  *bool         `yaml:"enabled"`
	Interval time.Duration `yaml:"interval"`
}

// TransportsConfig holds each transport's settings. A transport connects
// only when a binding uses it.
type TransportsConfig struct {
	Memory   memory.Config   `yaml:"memory"`
	RabbitMQ rabbitmq.Config `yaml:"rabbitmq"`
	MQTT     mqtt.Config     `yaml:"mqtt"`
	Aliyun   aliyun.Config   `yaml:"aliyun"`
}

// Binding says where a handler's messages come from.
type Binding struct {
	Transport string `yaml:"transport"`
	Topic     string `yaml:"topic"`
	Group     string `yaml:"group"`
	// Concurrency is how many messages may be in flight at once.
	Concurrency int `yaml:"concurrency"`
	// Format translates the wire format at the edge before the handler
	// sees the message: "" or "json" passes the payload as it is; a
	// transport may register more (for example Aliyun's Alink JSON).
	Format string `yaml:"format"`
	// TopicParams is a pattern such as "devices/{device_id}/telemetry": the
	// named segments of the topic a message arrived on are given to the
	// handler as attributes.
	TopicParams string            `yaml:"topic_params"`
	Options     map[string]string `yaml:"options"`
}

// EventBinding says where an outgoing event type is published.
type EventBinding struct {
	Transport string            `yaml:"transport"`
	Topic     string            `yaml:"topic"`
	Options   map[string]string `yaml:"options"`
}

// Transport names.
const (
	TransportMemory   = "memory"
	TransportRabbitMQ = "rabbitmq"
	TransportMQTT     = "mqtt"
	TransportAliyun   = "aliyun"
)

// DefaultConcurrency is a binding's concurrency when it sets none.
const DefaultConcurrency = 64

var transportNames = []string{TransportMemory, TransportRabbitMQ, TransportMQTT, TransportAliyun}

// DefaultConfig is the configuration of a fresh checkout: the sample
// handlers on the in-memory transport, no broker needed.
func DefaultConfig() Config {
	return Config{
		Service:      "hexmill",
		HTTPAddr:     ":8080",
		DrainTimeout: 10 * time.Second,
		Log:          LogConfig{Level: "info", Format: "text"},
		Retry:        RetryConfig{MaxRetries: 3, InitialInterval: 100 * time.Millisecond, MaxInterval: 2 * time.Second, Multiplier: 2},
		Poison:       EventBinding{Transport: TransportMemory, Topic: "hexmill.poison"},
		Demo:         DemoConfig{Interval: time.Second},
		Handlers: map[string]Binding{
			domain.TelemetryHandlerName:    {Transport: TransportMemory, Topic: "devices.telemetry", Group: "hexmill", Concurrency: DefaultConcurrency},
			domain.DeviceStatusHandlerName: {Transport: TransportMemory, Topic: "devices.status", Group: "hexmill", Concurrency: DefaultConcurrency},
		},
		Events: map[string]EventBinding{
			domain.AlertRaisedType:         {Transport: TransportMemory, Topic: "alerts"},
			domain.DeviceStatusChangedType: {Transport: TransportMemory, Topic: "devices.status-changed"},
		},
		Domain:     domain.DefaultConfig(),
		Transports: TransportsConfig{Memory: memory.Config{QueueLimit: memory.DefaultQueueLimit}},
	}
}

// LoadConfig reads the defaults, then the YAML file named by HEXMILL_CONFIG
// (if set), then the environment, and validates the result. lookup is
// os.LookupEnv outside tests.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	cfg := DefaultConfig()
	if path, ok := lookup(EnvConfigFile); ok && path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config file: %w (set %s to a readable YAML file or unset it)", err, EnvConfigFile)
		}
		if err := decodeYAML(b, &cfg); err != nil {
			return cfg, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if err := applyEnv(&cfg, EnvPrefix, lookup); err != nil {
		return cfg, err
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func decodeYAML(b []byte, cfg *Config) error {
	// Check the document against Config first: yaml.v3's own errors give
	// a line and a Go type, not the setting, its variable and a fix.
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%w (fix the YAML syntax)", err)
	}
	if err := checkYAML(&doc, reflect.TypeOf(cfg).Elem(), ""); err != nil {
		return err
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) { // an empty file sets nothing
		return err
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Demo.Enabled == nil {
		on := c.onlyMemory()
		c.Demo.Enabled = &on
	}
	c.Transports.Memory.SetDefaults()
	c.Transports.RabbitMQ.SetDefaults()
	c.Transports.MQTT.SetDefaults()
	c.Transports.Aliyun.SetDefaults()
	for name, b := range c.Handlers {
		if b.Concurrency == 0 {
			b.Concurrency = DefaultConcurrency
		}
		c.Handlers[name] = b
	}
}

func (c Config) onlyMemory() bool {
	for _, t := range c.usedTransports() {
		if t != TransportMemory {
			return false
		}
	}
	return true
}

// usedTransports lists the transports some binding refers to, sorted.
func (c Config) usedTransports() []string {
	var used []string
	add := func(t string) {
		if t != "" && !slices.Contains(used, t) {
			used = append(used, t)
		}
	}
	for _, b := range c.Handlers {
		add(b.Transport)
	}
	for _, e := range c.Events {
		add(e.Transport)
	}
	add(c.Poison.Transport)
	slices.Sort(used)
	return used
}

// Validate reports the first invalid setting: its YAML path, its
// environment variable, and what to do.
func (c Config) Validate() error {
	if c.Service == "" {
		return fieldError("service", "must not be empty; name the service, e.g. hexmill")
	}
	if c.DrainTimeout <= 0 {
		return fieldError("drain_timeout", "must be a positive duration, e.g. 10s")
	}
	if c.Retry.MaxRetries < 0 {
		return fieldError("retry.max_retries", "must be 0 or more")
	}
	if c.Retry.InitialInterval <= 0 || c.Retry.MaxInterval < c.Retry.InitialInterval {
		return fieldError("retry.initial_interval", "must be positive and not above retry.max_interval, e.g. 100ms and 2s")
	}
	if c.Retry.Multiplier < 1 {
		return fieldError("retry.multiplier", "must be 1 or more, e.g. 2")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fieldError("log.level", "must be one of debug, info, warn, error")
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fieldError("log.format", "must be text or json")
	}
	if err := c.Tracing.Validate(); err != nil {
		return err
	}
	if c.Demo.Interval <= 0 {
		return fieldError("demo.interval", "must be a positive duration, e.g. 1s")
	}
	if len(c.Handlers) == 0 {
		return fieldError("handlers", "bind at least one handler")
	}
	for _, name := range sortedKeys(c.Handlers) {
		b := c.Handlers[name]
		path := "handlers." + name
		if err := checkTransport(path+".transport", b.Transport); err != nil {
			return err
		}
		if b.Topic == "" && b.Transport != TransportAliyun {
			return fieldError(path+".topic", "must name the topic or queue to consume")
		}
		if b.Concurrency < 1 {
			return fieldError(path+".concurrency", "must be 1 or more")
		}
		if _, err := parseTopicParams(b.TopicParams); err != nil {
			return fieldError(path+".topic_params", err.Error())
		}
	}
	for _, name := range sortedKeys(c.Events) {
		e := c.Events[name]
		path := "events." + name
		if err := checkTransport(path+".transport", e.Transport); err != nil {
			return err
		}
		if e.Topic == "" {
			return fieldError(path+".topic", "must name the topic or routing key to publish to")
		}
	}
	if err := checkTransport("poison.transport", c.Poison.Transport); err != nil {
		return err
	}
	if c.Poison.Topic == "" {
		return fieldError("poison.topic", "must name where failed messages go")
	}
	for _, t := range c.usedTransports() {
		if err := c.validateTransport(t); err != nil {
			return prefixField("transports."+t+".", err)
		}
	}
	if err := c.Domain.Validate(); err != nil {
		// "config: domain.thresholds.x: what to do"
		field, fix, ok := strings.Cut(strings.TrimPrefix(err.Error(), "config: "), ": ")
		if !ok || strings.Contains(field, " ") {
			field, fix = "domain", err.Error()
		}
		return &ConfigError{Field: field, Fix: fix}
	}
	return nil
}

func (c Config) validateTransport(name string) error {
	switch name {
	case TransportMemory:
		return c.Transports.Memory.Validate()
	case TransportRabbitMQ:
		return c.Transports.RabbitMQ.Validate()
	case TransportMQTT:
		return c.Transports.MQTT.Validate()
	case TransportAliyun:
		return c.Transports.Aliyun.Validate()
	}
	return nil
}

func checkTransport(path, name string) error {
	if !slices.Contains(transportNames, name) {
		return fieldError(path, fmt.Sprintf("%q is not a transport; use one of %s", name, strings.Join(transportNames, ", ")))
	}
	return nil
}

// ConfigError names the setting that is wrong and what to do about it.
type ConfigError struct {
	Field string // YAML path, e.g. transports.rabbitmq.url
	Fix   string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("config: %s (%s): %s", e.Field, EnvName(e.Field), e.Fix)
}

func fieldError(field, fix string) error { return &ConfigError{Field: field, Fix: fix} }

// prefixField puts an adapter's field error under its place in Config. An
// adapter's Validate returns errors that start with the field's YAML name,
// "field: what to do".
func prefixField(prefix string, err error) error {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return &ConfigError{Field: prefix + ce.Field, Fix: ce.Fix}
	}
	field, fix, ok := strings.Cut(err.Error(), ": ")
	if !ok || strings.ContainsAny(field, " ") {
		return &ConfigError{Field: strings.TrimSuffix(prefix, "."), Fix: err.Error()}
	}
	return &ConfigError{Field: prefix + field, Fix: fix}
}

// EnvName is the environment variable that sets a YAML path.
func EnvName(path string) string { return envName(EnvPrefix, path) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

var (
	yamlUnmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

// checkYAML reports the first setting of a YAML document that does not fit
// type t (Config at the top): an unknown key or a value of the wrong kind,
// as a ConfigError naming the setting, its line and what to write.
func checkYAML(n *yaml.Node, t reflect.Type, path string) error {
	switch n.Kind {
	case 0:
		return nil // an empty document
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := checkYAML(c, t, path); err != nil {
				return err
			}
		}
		return nil
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil
		}
		return checkYAML(n.Alias, t, path)
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil // leaves the default
	}
	pt := reflect.PointerTo(t)
	if t.Kind() != reflect.Pointer && (pt.Implements(yamlUnmarshalerType) || pt.Implements(textUnmarshalerType)) {
		return decodeYAMLValue(n, t, path)
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkYAML(n, t.Elem(), path)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return yamlKindError(n, t, path)
		}
		fields := map[string]reflect.Type{}
		yamlFields(t, fields)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.ShortTag() == "!!merge" {
				continue // "<<: *anchor": yaml.v3 checks the merged keys itself
			}
			ft, ok := fields[k.Value]
			if !ok {
				return &ConfigError{Field: join(path, k.Value), Fix: fmt.Sprintf("line %d: not a setting; %s takes %s",
					k.Line, orTop(path), strings.Join(sortedKeys(fields), ", "))}
			}
			if err := checkYAML(v, ft, join(path, k.Value)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return yamlKindError(n, t, path)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.ShortTag() == "!!merge" {
				continue
			}
			if err := checkYAML(v, t.Elem(), join(path, k.Value)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return yamlKindError(n, t, path)
		}
		for i, item := range n.Content {
			err := checkYAML(item, t.Elem(), path)
			var ce *ConfigError
			if errors.As(err, &ce) {
				// A list item has no variable of its own: name the list.
				rel := strings.TrimPrefix(strings.TrimPrefix(ce.Field, path), ".")
				if rel != "" {
					rel += ": "
				}
				return &ConfigError{Field: path, Fix: fmt.Sprintf("item %d: %s%s", i+1, rel, ce.Fix)}
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return decodeYAMLValue(n, t, path)
}

// yamlFields gathers the YAML names of t's fields, inline ones included.
func yamlFields(t reflect.Type, fields map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if strings.Contains(opts, "inline") {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				yamlFields(ft, fields)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // yaml.v3's default
		}
		fields[name] = f.Type
	}
}

func decodeYAMLValue(n *yaml.Node, t reflect.Type, path string) error {
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		return yamlKindError(n, t, path)
	}
	return nil
}

func yamlKindError(n *yaml.Node, t reflect.Type, path string) error {
	if path == "" {
		return fmt.Errorf("line %d: the file must be a mapping of settings (key: value), e.g. drain_timeout: 10s", n.Line)
	}
	got := n.Value
	switch n.Kind {
	case yaml.MappingNode:
		got = "a mapping"
	case yaml.SequenceNode:
		got = "a list"
	default:
		got = strconv.Quote(got)
	}
	return &ConfigError{Field: path, Fix: fmt.Sprintf("line %d: cannot use %s: want %s", n.Line, got, wantKind(t))}
}

func wantKind(t reflect.Type) string {
	if t == durationType {
		return "a duration such as 500ms, 10s, 1m"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number, 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a single value (quote it if needed)"
	case reflect.Struct:
		return "a mapping of settings (key: value)"
	case reflect.Map:
		return "a mapping (name: value)"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return "a value of type " + t.String()
}

func orTop(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}
