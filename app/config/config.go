// Package config is the service's configuration: the framework's part
// (Config), the sections of the service and the transports (Section),
// loaded from defaults, a YAML file and the environment (Load) and
// validated, every invalid setting a *ports.FieldError that names the
// setting, its environment variable and what to do.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
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
	// Ops is the ops HTTP server's behaviour: /inject, its token, timeouts.
	Ops OpsConfig `yaml:"ops"`
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
	sections []Section
}

// Section is a part of the configuration owned by the service or a
// transport rather than by Config: the YAML mapping at Path (e.g. domain,
// transports.rabbitmq) and its environment variables are decoded into
// Value, a pointer holding the defaults. A Value with SetDefaults() has
// it called after decoding; one with Validate() error is validated with
// the rest (a *ports.FieldError names the setting in the section). A
// transport's section (Transport set) is validated only when a binding
// uses that transport.
type Section struct {
	Path      string
	Value     any
	Transport string
}

// Default is the framework's default configuration for a service
// named name: no binding; Service.Defaults adds the service's.
func Default(name string) Config {
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

// Load reads the configuration of the service named name: the
// framework's defaults, then the service's (defaults, may be nil), then
// the YAML file named by <PREFIX>CONFIG (if set), then the environment
// env, into the framework's Config and into sections, and validates the
// result. An invalid setting is a *ports.FieldError naming it and its
// environment variable; any other error (the file cannot be read or
// parsed, a section is misdeclared) is a *FileError.
func Load(name string, defaults func(*Config), env map[string]string, sections ...Section) (Config, error) {
	cfg, err := load(name, defaults, env, sections)
	var fe *ports.FieldError
	if err != nil && !errors.As(err, &fe) {
		err = &FileError{Err: err}
	}
	return cfg, err
}

// templateName is the name of the service this repository is a template
// of; a fork renames it (make rename) and its variables with it.
const templateName = "hexmill"

func load(name string, defaults func(*Config), env map[string]string, sections []Section) (Config, error) {
	cfg := Default(name)
	if defaults != nil {
		defaults(&cfg)
	}
	cfg.name, cfg.prefix = name, EnvPrefix(name)
	cfg.sections = sections
	if err := cfg.checkSections(); err != nil {
		return cfg, err
	}
	// The template's variable, copied from its README into a fork's
	// environment, would otherwise be ignored in silence.
	if own, template := EnvConfigFile(name), EnvConfigFile(templateName); env[own] == "" && env[template] != "" && own != template {
		return cfg, &ports.FieldError{Field: "environment", Env: template,
			Fix: fmt.Sprintf("%s is set but this service reads %s: its variables start with its name, %s", template, own, EnvPrefix(name))}
	}
	if path, ok := env[EnvConfigFile(name)]; ok && path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config file: %w (set %s to a readable YAML file or unset it)", err, EnvConfigFile(name))
		}
		if err := cfg.decodeYAML(b); err != nil {
			return cfg, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if err := cfg.applyEnv(env); err != nil {
		return cfg, err
	}
	cfg.setDefaults()
	// /inject is on by default only in the zero-config demo.
	cfg.Ops.setDefaults(env[EnvConfigFile(name)] == "" && cfg.OnlyMemory())
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func (c *Config) checkSections() error {
	top := map[string]bool{}
	var names []string
	for _, s := range settings(reflect.TypeOf(*c)) {
		top[s.name] = true
		names = append(names, s.name)
	}
	slices.Sort(names)
	seen := map[string]bool{}
	for _, s := range c.sections {
		first, _, _ := strings.Cut(s.Path, ".")
		if s.Path == "" || top[first] || seen[s.Path] {
			return fmt.Errorf("config section %q: the path must be new and not under %v", s.Path, names)
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
			return &ports.FieldError{Field: join(p, v.Content[j].Value), Fix: fmt.Sprintf("line %d: not a setting%s; this build knows %s",
				v.Content[j].Line, didYouMean(join(p, v.Content[j].Value), under), strings.Join(under, ", "))}
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
	var ce *ports.FieldError
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
				fix := ce.Fix
				if !strings.Contains(fix, "did you mean") {
					fix += didYouMean(ce.Field, tops)
				}
				return &ports.FieldError{Field: ce.Field, Fix: fix + "; the service's sections: " + strings.Join(tops, ", ")}
			}
		}
		return err
	}
	slices.Sort(under)
	return &ports.FieldError{Field: ce.Field, Fix: "not a setting" + didYouMean(ce.Field, under) + "; this build knows " + strings.Join(under, ", ")}
}

func splitLast(path string) (parent, last string) {
	i := strings.LastIndex(path, ".")
	if i < 0 {
		return "", path
	}
	return path[:i], path[i+1:]
}

// withEnv names the environment variable of a *ports.FieldError's field.
func (c *Config) withEnv(err error) error {
	var fe *ports.FieldError
	if errors.As(err, &fe) && fe.Env == "" {
		fe.Env = envName(c.prefix, fe.Field)
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
	c.Postgres = c.Postgres.WithDefaults()
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

// OnlyMemory reports whether every binding is on the in-memory transport.
func (c Config) OnlyMemory() bool {
	for _, t := range c.UsedTransports() {
		if t != TransportMemory {
			return false
		}
	}
	return true
}

// UsedTransports lists the transports some binding refers to, sorted.
func (c Config) UsedTransports() []string {
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
	if c.Poison.Transport != PoisonPostgres {
		add(c.Poison.Transport)
	}
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
		return &ports.FieldError{Field: "service", Fix: "must not be empty; name the service, e.g. fleet"}
	}
	if c.DrainTimeout <= 0 {
		return &ports.FieldError{Field: "drain_timeout", Fix: "must be a positive duration, e.g. 10s"}
	}
	if c.PublishUnreadyAfter < 0 {
		return &ports.FieldError{Field: "publish_unready_after", Fix: "must be 0 (never) or a positive duration, e.g. 30s"}
	}
	if c.Retry.MaxRetries < 0 {
		return &ports.FieldError{Field: "retry.max_retries", Fix: "must be 0 or more"}
	}
	if c.Retry.InitialInterval <= 0 || c.Retry.MaxInterval < c.Retry.InitialInterval {
		return &ports.FieldError{Field: "retry.initial_interval", Fix: "must be positive and not above retry.max_interval, e.g. 100ms and 2s"}
	}
	if c.Retry.Multiplier < 1 {
		return &ports.FieldError{Field: "retry.multiplier", Fix: "must be 1 or more, e.g. 2"}
	}
	if err := c.checkDelayed(); err != nil {
		return err
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return &ports.FieldError{Field: "log.level", Fix: "must be one of debug, info, warn, error"}
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return &ports.FieldError{Field: "log.format", Fix: "must be text or json"}
	}
	if err := c.Tracing.Validate(); err != nil {
		return err
	}
	if err := c.Ops.Validate(); err != nil {
		return err
	}
	if len(c.Handlers) == 0 {
		return &ports.FieldError{Field: "handlers", Fix: "bind at least one handler: handlers.<name>.transport and .topic in the configuration file, " +
			c.prefix + "HANDLERS_<NAME>_TRANSPORT and _TOPIC, or defaults in code (app.Service.Defaults; memory transport for a run without brokers)"}
	}
	for _, name := range sortedKeys(c.Handlers) {
		b := c.Handlers[name]
		path := "handlers." + name
		if err := c.checkTransport(path+".transport", b.Transport); err != nil {
			return err
		}
		if b.Topic == "" && b.Transport != TransportAliyun {
			return &ports.FieldError{Field: path + ".topic", Fix: "must name the topic or queue to consume"}
		}
		if b.Concurrency < 1 {
			return &ports.FieldError{Field: path + ".concurrency", Fix: "must be 1 or more"}
		}
		if err := b.checkBounds(path); err != nil {
			return err
		}
		if _, err := ParseTopicParams(b.TopicParams); err != nil {
			return &ports.FieldError{Field: path + ".topic_params", Fix: err.Error()}
		}
		if err := b.checkOrder(path); err != nil {
			return err
		}
		if b.MessageID != "" && b.MessageID != MessageIDTransport && b.MessageID != MessageIDContent {
			return &ports.FieldError{Field: path + ".message_id", Fix: fmt.Sprintf("%q is not a message identity; use transport (the sender's or broker's ID, the default) or content (a hash of topic and payload)", b.MessageID)}
		}
		if err := c.CheckIdempotent(name, c.Postgres.Enabled()); err != nil {
			return err
		}
	}
	if err := c.Postgres.Validate(); err != nil {
		return inSection("postgres", err)
	}
	for _, name := range sortedKeys(c.Events) {
		e := c.Events[name]
		path := "events." + name
		if err := c.checkTransport(path+".transport", e.Transport); err != nil {
			return err
		}
		if e.Topic == "" {
			return &ports.FieldError{Field: path + ".topic", Fix: "must name the topic or routing key to publish to"}
		}
	}
	if c.Poison.Transport == "" {
		var durable []string
		for _, name := range sortedKeys(c.Handlers) {
			if t := c.Handlers[name].Transport; t != TransportMemory {
				durable = append(durable, "handlers."+name+" on "+t)
			}
		}
		return &ports.FieldError{Field: "poison.transport", Fix: fmt.Sprintf("must be set where handlers consume from a broker (%s): "+
			"a poisoned message is acked at its source, so it must go where it is kept, e.g. rabbitmq with poison.topic a bound queue "+
			"(memory keeps it only until the process ends)", strings.Join(durable, ", "))}
	}
	if c.Poison.Transport == PoisonPostgres {
		if err := c.checkPoisonPostgres(); err != nil {
			return err
		}
	} else if err := c.checkTransport("poison.transport", c.Poison.Transport); err != nil {
		return err
	}
	if c.Poison.Topic == "" {
		return &ports.FieldError{Field: "poison.topic", Fix: "must name where failed messages go"}
	}
	if err := c.checkBindingOptions(); err != nil {
		return err
	}
	used := c.UsedTransports()
	for _, s := range c.sections {
		if s.Transport != "" && !slices.Contains(used, s.Transport) {
			continue // validated when a binding uses it
		}
		if v, ok := s.Value.(transport.Validator); ok {
			if err := v.Validate(); err != nil {
				return inSection(s.Path, err)
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
				return inSection(path, err)
			}
			return &ports.FieldError{Field: path + ".options", Fix: strings.TrimPrefix(strings.TrimPrefix(err.Error(), "options."), "options: ")}
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
		return &ports.FieldError{Field: path, Fix: fmt.Sprintf("%q is not a transport; use one of %s", name, strings.Join(names, ", "))}
	}
	return nil
}

// CheckIdempotent refuses an idempotent binding of the handler bound at
// handlers.<key> when PostgreSQL is off (postgres reports whether it is
// on): idempotent handling runs in its transactions.
func (c Config) CheckIdempotent(key string, postgres bool) error {
	if !c.Handlers[key].Idempotent || postgres {
		return nil
	}
	return c.FieldError("handlers."+key+".idempotent", fmt.Sprintf("needs PostgreSQL, which is off: set postgres.url (%s) or postgres.host, or set idempotent to false",
		c.EnvName("postgres.url")))
}

// FieldError is the error a service's constructor returns for a setting
// that cannot work (field is its YAML path): Main prints it as one line
// naming the setting, its environment variable and fix, and exits 2.
func (c Config) FieldError(field, fix string) error {
	return &ports.FieldError{Field: field, Env: envName(c.prefix, field), Fix: fix}
}

// InSection puts err, a section's error, under the section's path (see
// inSection) and names the setting's environment variable.
func (c Config) InSection(path string, err error) error { return c.withEnv(inSection(path, err)) }

// EnvName is the environment variable that sets a YAML path.
func (c Config) EnvName(path string) string { return envName(c.prefix, path) }

// applyEnv overrides the fields of c and of its sections from environment
// variables named after their YAML paths (see Config). A variable may
// also create a map entry: FLEET_HANDLERS_BATTERY_TOPIC creates
// handlers.battery. A variable with the service's prefix that sets
// nothing is an error naming the closest variable that would.
func (c *Config) applyEnv(env map[string]string) error {
	used := map[string]bool{EnvConfigFile(c.name): true}
	e := envApplier{prefix: c.prefix, env: env, used: used}
	if err := e.apply(reflect.ValueOf(c).Elem(), ""); err != nil {
		return c.withEnv(err)
	}
	for _, s := range c.sections {
		if err := e.apply(reflect.ValueOf(s.Value).Elem(), s.Path); err != nil {
			return c.withEnv(err)
		}
	}
	return c.checkUnusedEnv(env, used, e.known)
}

// checkUnusedEnv refuses a variable that looks like a setting of this
// service but sets nothing, a typo that would otherwise leave a default in
// place. Variables whose first word is far from every top-level setting
// (FLEET_TEST_..., tools' own variables) are left alone.
func (c *Config) checkUnusedEnv(env map[string]string, used map[string]bool, known []string) error {
	var tops []string
	for _, k := range known {
		first, _, _ := strings.Cut(strings.TrimPrefix(k, c.prefix), "_")
		if !slices.Contains(tops, first) {
			tops = append(tops, first)
		}
	}
	for _, k := range sortedKeys(env) {
		if used[k] || !strings.HasPrefix(k, c.prefix) || len(k) == len(c.prefix) {
			continue
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(k, c.prefix), "_")
		near, limit := false, 2
		if len(first) <= 4 {
			limit = 1
		}
		for _, t := range tops {
			if distance(first, t) <= limit {
				near = true
			}
		}
		if !near {
			continue
		}
		closest, best := "", -1
		for _, kn := range known {
			if d := distance(k, kn); best < 0 || d < best {
				closest, best = kn, d
			}
		}
		return &ports.FieldError{Field: "environment", Env: k, Fix: fmt.Sprintf("%s sets no setting; did you mean %s?", k, closest)}
	}
	return nil
}

// YAML is the effective configuration, the sections included, with every
// secret redacted.
func (c Config) YAML() ([]byte, error) {
	root, err := toTree(c)
	if err != nil {
		return nil, err
	}
	for _, s := range c.sections {
		v, err := toTree(s.Value)
		if err != nil {
			return nil, err
		}
		m := root
		parts := strings.Split(s.Path, ".")
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = v
	}
	return yaml.Marshal(root)
}

// Namespace is the service's name (not the instance's service
// setting, so that dashboards do not depend on it) as a Prometheus
// namespace.
func (c Config) Namespace() string {
	name := c.name
	if name == "" {
		name = c.Service
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, name)
}
