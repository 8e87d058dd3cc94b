package config

import (
	"reflect"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/ports"
)

// PostgresConfig is the postgres section: where the database is and how
// the pool behaves (postgres.Config, inline: postgres.url,
// postgres.password, postgres.max_conns, ...), how long the records of
// handled messages are kept, and the outbox relay's timings.
//
// PostgreSQL is on when url or host is set, and off otherwise (the
// default: the service keeps its state in memory). Other settings without
// url or host are refused, so that a half-written section is not silently
// ignored. Unset settings take the adapter's defaults, filled in when the
// section is on.
type PostgresConfig struct {
	postgres.Config `yaml:",inline"`
	// Retention of the handled-message records of idempotent handlers.
	Retention postgres.RetentionConfig `yaml:"retention"`
	// Relay is the outbox relay's timings (its publishers, the event
	// bindings', are not configuration); zero values take its defaults.
	Relay postgres.RelayConfig `yaml:"relay"`
}

// Enabled reports whether the service uses PostgreSQL: url or host is set.
func (c PostgresConfig) Enabled() bool { return c.URL != "" || c.Host != "" }

// Validate returns a *ports.FieldError relative to the section.
func (c PostgresConfig) Validate() error {
	if !c.Enabled() {
		if field := firstSet(reflect.ValueOf(c), ""); field != "" {
			return &ports.FieldError{Field: field, Fix: "is set but PostgreSQL is off; set postgres.url (or postgres.host) to use it, or remove the postgres settings"}
		}
		return nil
	}
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if err := c.Retention.Validate(); err != nil {
		return inSection("retention", err)
	}
	switch {
	case c.Relay.PollInterval < 0:
		return &ports.FieldError{Field: "relay.poll_interval", Fix: "want a positive duration, e.g. 200ms (0: the default)"}
	case c.Relay.BatchSize < 0:
		return &ports.FieldError{Field: "relay.batch_size", Fix: "want 1 or more, e.g. 100 (0: the default)"}
	case c.Relay.RetryBackoff < 0:
		return &ports.FieldError{Field: "relay.retry_backoff", Fix: "want a positive duration, e.g. 500ms (0: the default)"}
	}
	return nil
}

// firstSet is the YAML path of the first field of the struct v that is
// not zero, "" when all are.
func firstSet(v reflect.Value, path string) string {
	for _, s := range settings(v.Type()) {
		fv, err := v.FieldByIndexErr(s.index)
		if err != nil {
			continue
		}
		name := s.name
		if fv.Kind() == reflect.Struct && fv.Type() != durationType {
			if p := firstSet(fv, join(path, name)); p != "" {
				return p
			}
			continue
		}
		if !fv.IsZero() {
			return join(path, name)
		}
	}
	return ""
}

// WithDefaults fills the unset settings of a section that is on, so that
// -print-config shows what is in effect.
func (c PostgresConfig) WithDefaults() PostgresConfig {
	if !c.Enabled() {
		return c
	}
	c.Config = c.Config.WithDefaults()
	c.Retention = c.Retention.WithDefaults()
	c.Relay = c.Relay.WithDefaults()
	return c
}
