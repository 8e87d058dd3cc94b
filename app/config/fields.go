package config

import (
	"reflect"
	"strings"
)

// setting is a field of a configuration struct as YAML sees it.
type setting struct {
	name  string // its YAML key
	field reflect.StructField
	index []int // its place in the struct, for reflect.Value.FieldByIndex
}

// settings lists the settings of the struct type t in field order: its
// exported fields not tagged "-", by their yaml tag's name (yaml.v3's
// default, the lower-case field name, when the tag gives none), the
// settings of an inline struct as t's own. It is the one reader of yaml
// tags: the YAML check, the environment, the sections' paths and
// PostgreSQL's "set while off" check all see the settings it lists.
func settings(t reflect.Type) []setting {
	var out []setting
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
				for _, s := range settings(ft) {
					s.index = append([]int{i}, s.index...)
					out = append(out, s)
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, setting{name: name, field: f, index: []int{i}})
	}
	return out
}
