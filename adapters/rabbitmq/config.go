package rabbitmq

// Config configures the rabbitmq transport. (Placeholder: the rabbitmq adapter issue fills it.)
type Config struct{}

// SetDefaults fills the zero values with defaults. It is idempotent.
func (c *Config) SetDefaults() {}

// Validate reports the first invalid field, named as in YAML, with the fix.
func (c Config) Validate() error { return nil }
