package config

import (
	"errors"

	"github.com/hexmill/hexmill/ports"
)

// inSection puts a section's error under the section's path: a
// *ports.FieldError names a setting in the section; any other error is
// about the section as a whole.
func inSection(path string, err error) error {
	var fe *ports.FieldError
	if errors.As(err, &fe) {
		return &ports.FieldError{Field: path + "." + fe.Field, Fix: fe.Fix}
	}
	return &ports.FieldError{Field: path, Fix: err.Error()}
}

// FileError is a configuration that cannot be read: its file is
// unreadable or not YAML, or a section is misdeclared. Like a
// *ports.FieldError, it stops a service before anything connects.
type FileError struct{ Err error }

func (e *FileError) Error() string { return e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }
