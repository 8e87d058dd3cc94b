package ports

import "fmt"

// FieldError names a configuration setting that is wrong and what to do
// about it. Validate methods of configuration sections (the domain's, an
// adapter's) return it with Field relative to their section; the service
// puts the section's path in front and names the environment variable.
type FieldError struct {
	Field string // YAML path inside the section, e.g. thresholds.temperature
	Fix   string // what to do, e.g. "must be a finite number"
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Fix }

// FieldErrorf returns a *FieldError for field, its fix formatted as by
// fmt.Sprintf.
func FieldErrorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Fix: fmt.Sprintf(format, args...)}
}
