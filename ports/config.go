package ports

import "fmt"

// FieldError names a configuration setting that is wrong and what to do
// about it. Validate methods of configuration sections (the domain's, an
// adapter's) return it with Field relative to their section and no Env;
// the service puts the section's path in front and names the environment
// variable that sets it, and then it reads as the configuration's error:
// "config: <field> (<ENV>): <fix>". It is the framework's one field error:
// a service's Main exits 2 on one that names its variable.
type FieldError struct {
	Field string // YAML path, e.g. thresholds.temperature inside a section
	Env   string // its environment variable, once the service placed it
	Fix   string // what to do, e.g. "must be a finite number"
}

func (e *FieldError) Error() string {
	if e.Env == "" {
		return e.Field + ": " + e.Fix
	}
	return "config: " + e.Field + " (" + e.Env + "): " + e.Fix
}

// FieldErrorf returns a *FieldError for field, its fix formatted as by
// fmt.Sprintf.
func FieldErrorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Fix: fmt.Sprintf(format, args...)}
}
