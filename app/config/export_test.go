package config

import "reflect"

// Setting is a setting of a struct type as the configuration sees it.
type Setting struct {
	Name string
	Type reflect.Type
}

// Settings lists the settings of the struct type t with the walker the
// configuration uses.
func Settings(t reflect.Type) []Setting {
	var out []Setting
	for _, s := range settings(t) {
		out = append(out, Setting{Name: s.name, Type: s.field.Type})
	}
	return out
}
