// Package secret holds the string type for credentials: passwords, access
// secrets, tokens. It never prints its value: not with fmt, not in slog, not
// in a YAML or JSON dump. Only Reveal returns it, for the one place that
// sends it to the broker.
package secret

import "log/slog"

// String is a credential read from configuration.
type String string

const redacted = "[redacted]"

// Reveal returns the credential itself.
func (s String) Reveal() string { return string(s) }

// String implements fmt.Stringer without the value: empty when unset,
// "[redacted]" otherwise.
func (s String) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s String) GoString() string { return `secret.String("` + s.String() + `")` }

// LogValue keeps slog from printing the value.
func (s String) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalYAML keeps a configuration dump from printing the value.
func (s String) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalText keeps encoding/json and other text encoders from printing the value.
func (s String) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads the value; it is the inverse of nothing, on purpose.
func (s *String) UnmarshalText(b []byte) error {
	*s = String(b)
	return nil
}
