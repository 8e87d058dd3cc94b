package aliyun

// Config configures the aliyun transport. (Placeholder: the aliyun adapter issue fills it.)
type Config struct{}

// SetDefaults fills the zero values with defaults. It is idempotent.
func (c *Config) SetDefaults() {}

// Validate reports the first invalid field, named as in YAML, with the fix.
func (c Config) Validate() error { return nil }
