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

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

// Config is the framework's part of the service configuration; sections
// (AsConfig, AsTransport) add the service's and the transports' parts.
// Every field can be set in the YAML file (by its yaml name) and
// overridden by an environment variable: the service's prefix (FLEET_ for
// a service named fleet) + the YAML path in upper case joined by "_", with
// "-" as "_". For example transports.rabbitmq.url is
// FLEET_TRANSPORTS_RABBITMQ_URL and handlers.battery.transport is
// FLEET_HANDLERS_BATTERY_TRANSPORT.
type Config struct {
	// Service names this instance of the service in logs, client
	// identifiers and connection names; it defaults to the service's name
	// (Service.Name), which is also the metric namespace and the prefix of
	// the environment variables.
	Service string `yaml:"service"`
	// HTTPAddr is where /healthz, /readyz and /metrics listen; "off" disables.
	HTTPAddr string `yaml:"http_addr"`
	// DrainTimeout bounds how long stop waits for in-flight handlers before
	// it hands their messages back to the broker.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// PublishUnreadyAfter is how long an event binding (or the poison
	// target) may fail to publish before /readyz reports it; 0 never.
	// Meanwhile its messages are handed back for redelivery.
	PublishUnreadyAfter time.Duration `yaml:"publish_unready_after"`
	Log                 LogConfig     `yaml:"log"`
	Retry               RetryConfig   `yaml:"retry"`
	// Tracing exports OpenTelemetry spans over OTLP; off by default.
	Tracing TracingConfig `yaml:"tracing"`
	// Poison is where a message goes after its last retry, or at once when
	// its handler says the input is invalid. Its transport defaults to
	// memory only while every handler consumes from memory: where handlers
	// consume from a broker, it must be set, so that a poisoned message,
	// acked at its source, is kept durably.
	Poison EventBinding `yaml:"poison"`
	// Postgres is the service's database: state, idempotent handling and
	// the outbox. Off unless postgres.url or postgres.host is set.
	Postgres PostgresConfig `yaml:"postgres"`

	// Handlers binds each handler, by name, to where its messages come from.
	Handlers map[string]Binding `yaml:"handlers"`
	// Events binds each outgoing event type to where it is published.
	Events map[string]EventBinding `yaml:"events"`

	// name is the service's name (Service.Name), the metric namespace.
	name string
	// prefix starts the service's environment variables, e.g. FLEET_.
	prefix string
	// sections are the parts of the configuration owned by the service
	// and the transports, decoded into their own values.
	sections []ConfigSection
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
	TopicParams string `yaml:"topic_params"`
	// Idempotent handles each message at most once with effect: the
	// handler runs in a PostgreSQL transaction that also records the
	// message's ID, and a redelivered duplicate is acknowledged without
	// running it. Needs the postgres section.
	Idempotent bool `yaml:"idempotent"`
	// MessageID is what identifies a message (for idempotent handling,
	// logs and traces): "transport" (the default) takes the ID its sender
	// or broker gave it; "content" a hash of its topic and payload, for
	// senders that set no ID (most MQTT devices), whose redeliveries would
	// otherwise each get a new one. With "content", two messages with the
	// same topic and payload are one message.
	MessageID string            `yaml:"message_id"`
	Options   map[string]string `yaml:"options"`
}

// Message identities of a binding (Binding.MessageID).
const (
	MessageIDTransport = "transport"
	MessageIDContent   = "content"
)

// EventBinding says where an outgoing event type is published.
type EventBinding struct {
	Transport string            `yaml:"transport"`
	Topic     string            `yaml:"topic"`
	Options   map[string]string `yaml:"options"`
}

// Transport names of the transports the framework brings.
const (
	TransportMemory   = "memory"
	TransportRabbitMQ = "rabbitmq"
	TransportMQTT     = "mqtt"
	TransportAliyun   = "aliyun"
)

// DefaultConcurrency is a binding's concurrency when it sets none.
const DefaultConcurrency = 64

// DefaultConfig is the framework's default configuration for a service
// named name: no binding; Service.Defaults adds the service's.
func DefaultConfig(name string) Config {
	return Config{
		Service:             name,
		HTTPAddr:            ":8080",
		DrainTimeout:        10 * time.Second,
		PublishUnreadyAfter: 30 * time.Second,
		Log:                 LogConfig{Level: "info", Format: "text"},
		Retry:               RetryConfig{MaxRetries: 3, InitialInterval: 100 * time.Millisecond, MaxInterval: 2 * time.Second, Multiplier: 2},
		Poison:              EventBinding{Topic: name + ".poison"},
		Handlers:            map[string]Binding{},
		Events:              map[string]EventBinding{},
		name:                name,
		prefix:              EnvPrefix(name),
	}
}

// EnvPrefix is the prefix of the environment variables of a service named
// name: upper case, "-" and "." as "_", e.g. FLEET_ for fleet.
func EnvPrefix(name string) string {
	return strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(name)) + "_"
}

// EnvConfigFile is the variable that names the optional YAML file of a
// service named name, e.g. FLEET_CONFIG; environment variables override
// what the file says.
func EnvConfigFile(name string) string { return EnvPrefix(name) + "CONFIG" }

// LoadConfig reads svc's defaults, then the YAML file named by
// <PREFIX>CONFIG (if set), then the environment, into the framework's
// Config and into sections, and validates the result.
func LoadConfig(svc Service, env Env, sections ...ConfigSection) (Config, error) {
	cfg := DefaultConfig(svc.Name)
	if svc.Defaults != nil {
		svc.Defaults(&cfg)
	}
	cfg.name, cfg.prefix = svc.Name, EnvPrefix(svc.Name)
	cfg.sections = sections
	if err := cfg.checkSections(); err != nil {
		return cfg, err
	}
	if path, ok := env[EnvConfigFile(svc.Name)]; ok && path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config file: %w (set %s to a readable YAML file or unset it)", err, EnvConfigFile(svc.Name))
		}
		if err := cfg.decodeYAML(b); err != nil {
			return cfg, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if err := cfg.applyEnv(env); err != nil {
		return cfg, err
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func (c *Config) checkSections() error {
	top := map[string]bool{}
	yamlFields(reflect.TypeOf(*c), map[string]reflect.Type{})
	fields := map[string]reflect.Type{}
	yamlFields(reflect.TypeOf(*c), fields)
	for k := range fields {
		top[k] = true
	}
	seen := map[string]bool{}
	for _, s := range c.sections {
		first, _, _ := strings.Cut(s.Path, ".")
		if s.Path == "" || top[first] || seen[s.Path] {
			return fmt.Errorf("config section %q: the path must be new and not under %v", s.Path, sortedKeys(fields))
		}
		if v := reflect.ValueOf(s.Value); v.Kind() != reflect.Pointer || v.IsNil() {
			return fmt.Errorf("config section %q: the value must be a non-nil pointer, not %T", s.Path, s.Value)
		}
		seen[s.Path] = true
	}
	return nil
}

func (c *Config) decodeYAML(b []byte) error {
	// Check the document against Config and the sections first: yaml.v3's
	// own errors give a line and a Go type, not the setting, its variable
	// and a fix.
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%w (fix the YAML syntax)", err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	if root.Kind == 0 || root.Kind == yaml.DocumentNode {
		return nil // an empty file sets nothing
	}
	if root.Kind != yaml.MappingNode {
		return yamlKindError(root, reflect.TypeOf(*c), "")
	}
	for _, s := range c.sections {
		n := takeNode(root, strings.Split(s.Path, "."))
		if n == nil {
			continue
		}
		t := reflect.TypeOf(s.Value).Elem()
		if err := checkYAML(n, t, s.Path); err != nil {
			return c.withEnv(err)
		}
		if err := decodeStrict(n, s.Value); err != nil {
			return err
		}
	}
	if err := c.checkSectionParents(root, ""); err != nil {
		return c.withEnv(err)
	}
	if err := checkYAML(root, reflect.TypeOf(*c), ""); err != nil {
		return c.withEnv(c.sectionKeyError(err))
	}
	return decodeStrict(root, c)
}

// decodeStrict decodes n into v, refusing unknown keys.
func decodeStrict(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// takeNode removes the value at path from the mapping root and returns
// it; a mapping left empty by the removal is removed too. nil when the
// document does not set path.
func takeNode(root *yaml.Node, path []string) *yaml.Node {
	if root.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != path[0] {
			continue
		}
		v := root.Content[i+1]
		if len(path) == 1 {
			root.Content = append(root.Content[:i], root.Content[i+2:]...)
			return v
		}
		n := takeNode(v, path[1:])
		if n != nil && v.Kind == yaml.MappingNode && len(v.Content) == 0 {
			root.Content = append(root.Content[:i], root.Content[i+2:]...)
		}
		return n
	}
	return nil
}

// checkSectionParents refuses what is left, once the sections took their
// parts, under a mapping that only sections live in (transports.kafka).
func (c *Config) checkSectionParents(n *yaml.Node, path string) error {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		p := join(path, k.Value)
		var under []string
		for _, s := range c.sections {
			if strings.HasPrefix(s.Path, p+".") {
				under = append(under, s.Path)
			}
		}
		if len(under) == 0 {
			continue
		}
		v := n.Content[i+1]
		if v.Kind != yaml.MappingNode {
			if v.ShortTag() == "!!null" {
				continue
			}
			return yamlKindError(v, reflect.TypeOf(map[string]any{}), p)
		}
		if err := c.checkSectionParents(v, p); err != nil {
			return err
		}
		for j := 0; j+1 < len(v.Content); j += 2 {
			slices.Sort(under)
			return &ConfigError{Field: join(p, v.Content[j].Value), Fix: fmt.Sprintf("line %d: not a setting; this build knows %s",
				v.Content[j].Line, strings.Join(under, ", "))}
		}
		// Left empty: drop it, Config has no such field.
		n.Content = append(n.Content[:i], n.Content[i+2:]...)
		i -= 2
	}
	return nil
}

// sectionKeyError says which sections there are when a key the YAML
// checker refused lies where sections live (transports.kafka).
func (c *Config) sectionKeyError(err error) error {
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(ce.Fix, "not a setting") {
		return err
	}
	var under []string
	for _, s := range c.sections {
		parent, _ := splitLast(s.Path)
		if parent != "" && strings.HasPrefix(ce.Field, parent+".") || ce.Field == parent {
			under = append(under, s.Path)
		}
	}
	if len(under) == 0 {
		if parent, _ := splitLast(ce.Field); parent == "" {
			var tops []string
			for _, s := range c.sections {
				first, _, _ := strings.Cut(s.Path, ".")
				if !slices.Contains(tops, first) {
					tops = append(tops, first)
				}
			}
			if len(tops) > 0 {
				slices.Sort(tops)
				return &ConfigError{Field: ce.Field, Fix: ce.Fix + "; the service's sections: " + strings.Join(tops, ", ")}
			}
		}
		return err
	}
	slices.Sort(under)
	return &ConfigError{Field: ce.Field, Fix: "not a setting; this build knows " + strings.Join(under, ", ")}
}

func splitLast(path string) (parent, last string) {
	i := strings.LastIndex(path, ".")
	if i < 0 {
		return "", path
	}
	return path[:i], path[i+1:]
}

// withEnv names the environment variable of a ConfigError's field.
func (c *Config) withEnv(err error) error {
	var ce *ConfigError
	if errors.As(err, &ce) && ce.Env == "" {
		ce.Env = envName(c.prefix, ce.Field)
	}
	return err
}

func (c *Config) setDefaults() {
	if c.Poison.Transport == "" {
		memoryOnly := true
		for _, b := range c.Handlers {
			memoryOnly = memoryOnly && b.Transport == TransportMemory
		}
		if memoryOnly {
			c.Poison.Transport = TransportMemory // what memory delivers is lost on restart anyway
		}
	}
	c.Postgres = c.Postgres.withDefaults()
	for _, s := range c.sections {
		if d, ok := s.Value.(transport.Defaulter); ok {
			d.SetDefaults()
		}
	}
	for name, b := range c.Handlers {
		if b.Concurrency == 0 {
			b.Concurrency = DefaultConcurrency
		}
		c.Handlers[name] = b
	}
}

// onlyMemory reports whether no binding uses a transport other than
// memory.
func (c Config) onlyMemory() bool {
	for _, t := range c.usedTransports() {
		if t != TransportMemory {
			return false
		}
	}
	return true
}

// OnlyMemory reports whether every binding is on the in-memory transport.
func (c Config) OnlyMemory() bool { return c.onlyMemory() }

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

// transportNames lists the transports of this build, sorted.
func (c Config) transportNames() []string {
	var names []string
	for _, s := range c.sections {
		if s.Transport != "" {
			names = append(names, s.Transport)
		}
	}
	slices.Sort(names)
	return names
}

// Validate reports the first invalid setting: its YAML path, its
// environment variable, and what to do.
func (c Config) Validate() error {
	return c.withEnv(c.validate())
}

func (c Config) validate() error {
	if c.Service == "" {
		return fieldError("service", "must not be empty; name the service, e.g. fleet")
	}
	if c.DrainTimeout <= 0 {
		return fieldError("drain_timeout", "must be a positive duration, e.g. 10s")
	}
	if c.PublishUnreadyAfter < 0 {
		return fieldError("publish_unready_after", "must be 0 (never) or a positive duration, e.g. 30s")
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
	if len(c.Handlers) == 0 {
		return fieldError("handlers", "bind at least one handler, e.g. handlers.<name>.transport and .topic")
	}
	for _, name := range sortedKeys(c.Handlers) {
		b := c.Handlers[name]
		path := "handlers." + name
		if err := c.checkTransport(path+".transport", b.Transport); err != nil {
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
		if b.MessageID != "" && b.MessageID != MessageIDTransport && b.MessageID != MessageIDContent {
			return fieldError(path+".message_id", fmt.Sprintf("%q is not a message identity; use transport (the sender's or broker's ID, the default) or content (a hash of topic and payload)", b.MessageID))
		}
		if b.Idempotent && !c.Postgres.Enabled() {
			return fieldError(path+".idempotent", fmt.Sprintf("needs PostgreSQL, which is off: set postgres.url (%s) or postgres.host, or set idempotent to false",
				c.EnvName("postgres.url")))
		}
	}
	if err := c.Postgres.validate(); err != nil {
		return sectionError("postgres", err)
	}
	for _, name := range sortedKeys(c.Events) {
		e := c.Events[name]
		path := "events." + name
		if err := c.checkTransport(path+".transport", e.Transport); err != nil {
			return err
		}
		if e.Topic == "" {
			return fieldError(path+".topic", "must name the topic or routing key to publish to")
		}
	}
	if c.Poison.Transport == "" {
		var durable []string
		for _, name := range sortedKeys(c.Handlers) {
			if t := c.Handlers[name].Transport; t != TransportMemory {
				durable = append(durable, "handlers."+name+" on "+t)
			}
		}
		return fieldError("poison.transport", fmt.Sprintf("must be set where handlers consume from a broker (%s): "+
			"a poisoned message is acked at its source, so it must go where it is kept, e.g. rabbitmq with poison.topic a bound queue "+
			"(memory keeps it only until the process ends)", strings.Join(durable, ", ")))
	}
	if err := c.checkTransport("poison.transport", c.Poison.Transport); err != nil {
		return err
	}
	if c.Poison.Topic == "" {
		return fieldError("poison.topic", "must name where failed messages go")
	}
	if err := c.checkBindingOptions(); err != nil {
		return err
	}
	used := c.usedTransports()
	for _, s := range c.sections {
		if s.Transport != "" && !slices.Contains(used, s.Transport) {
			continue // validated when a binding uses it
		}
		if v, ok := s.Value.(transport.Validator); ok {
			if err := v.Validate(); err != nil {
				return sectionError(s.Path, err)
			}
		}
	}
	return nil
}

// checkBindingOptions validates every binding's transport-specific
// options with its transport's section, so that a typo or a bad qos fails
// here (and in -check-config), not once connected.
func (c Config) checkBindingOptions() error {
	checker := func(name string) transport.OptionsChecker {
		for _, s := range c.sections {
			if s.Transport == name {
				oc, _ := s.Value.(transport.OptionsChecker)
				return oc
			}
		}
		return nil
	}
	check := func(path, name string, consume bool, options map[string]string) error {
		oc := checker(name)
		if oc == nil {
			return nil
		}
		if err := oc.CheckBindingOptions(consume, options); err != nil {
			var fe *ports.FieldError
			if errors.As(err, &fe) {
				return fieldError(path+"."+fe.Field, fe.Fix)
			}
			return fieldError(path+".options", strings.TrimPrefix(strings.TrimPrefix(err.Error(), "options."), "options: "))
		}
		return nil
	}
	for _, name := range sortedKeys(c.Handlers) {
		b := c.Handlers[name]
		if err := check("handlers."+name, b.Transport, true, b.Options); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(c.Events) {
		e := c.Events[name]
		if err := check("events."+name, e.Transport, false, e.Options); err != nil {
			return err
		}
	}
	return check("poison", c.Poison.Transport, false, c.Poison.Options)
}

func (c Config) checkTransport(path, name string) error {
	names := c.transportNames()
	if !slices.Contains(names, name) {
		return fieldError(path, fmt.Sprintf("%q is not a transport; use one of %s", name, strings.Join(names, ", ")))
	}
	return nil
}

// ConfigError names the setting that is wrong and what to do about it.
type ConfigError struct {
	Field string // YAML path, e.g. transports.rabbitmq.url
	Env   string // its environment variable, e.g. FLEET_TRANSPORTS_RABBITMQ_URL
	Fix   string
}

func (e *ConfigError) Error() string {
	if e.Env == "" {
		return fmt.Sprintf("config: %s: %s", e.Field, e.Fix)
	}
	return fmt.Sprintf("config: %s (%s): %s", e.Field, e.Env, e.Fix)
}

func fieldError(field, fix string) error { return &ConfigError{Field: field, Fix: fix} }

// FieldError is the error a service's constructor returns for a setting
// that cannot work (field is its YAML path): Main prints it as one line
// naming the setting, its environment variable and fix, and exits 2.
func (c Config) FieldError(field, fix string) error { return c.fieldError(field, fix) }

// fieldError returns a ConfigError on field with its environment variable.
func (c Config) fieldError(field, fix string) error {
	return &ConfigError{Field: field, Env: envName(c.prefix, field), Fix: fix}
}

// sectionError puts a section's error under the section's path: a
// *ports.FieldError names a setting in the section; any other error is
// about the section as a whole.
func sectionError(path string, err error) error {
	var fe *ports.FieldError
	if errors.As(err, &fe) {
		return &ConfigError{Field: path + "." + fe.Field, Fix: fe.Fix}
	}
	var ce *ConfigError
	if errors.As(err, &ce) {
		return &ConfigError{Field: path + "." + ce.Field, Fix: ce.Fix}
	}
	return &ConfigError{Field: path, Fix: err.Error()}
}

// EnvName is the environment variable that sets a YAML path.
func (c Config) EnvName(path string) string { return envName(c.prefix, path) }

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
