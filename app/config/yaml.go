package config

import (
	"encoding"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/hexmill/hexmill/ports"
)

// decodeStrict decodes n into v, refusing unknown keys.
func decodeStrict(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// takeNode removes the value at path from the mapping root and returns
// it; a mapping left empty by the removal is removed too. nil when the
// document does not set path.
func takeNode(root *yaml.Node, path []string) *yaml.Node {
	if root.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != path[0] {
			continue
		}
		v := root.Content[i+1]
		if len(path) == 1 {
			root.Content = append(root.Content[:i], root.Content[i+2:]...)
			return v
		}
		n := takeNode(v, path[1:])
		if n != nil && v.Kind == yaml.MappingNode && len(v.Content) == 0 {
			root.Content = append(root.Content[:i], root.Content[i+2:]...)
		}
		return n
	}
	return nil
}

var (
	yamlUnmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

// checkYAML reports the first setting of a YAML document that does not fit
// type t (Config at the top): an unknown key or a value of the wrong kind,
// as a *ports.FieldError naming the setting, its line and what to write.
func checkYAML(n *yaml.Node, t reflect.Type, path string) error {
	switch n.Kind {
	case 0:
		return nil // an empty document
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := checkYAML(c, t, path); err != nil {
				return err
			}
		}
		return nil
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil
		}
		return checkYAML(n.Alias, t, path)
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil // leaves the default
	}
	pt := reflect.PointerTo(t)
	if t.Kind() != reflect.Pointer && (pt.Implements(yamlUnmarshalerType) || pt.Implements(textUnmarshalerType)) {
		return decodeYAMLValue(n, t, path)
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkYAML(n, t.Elem(), path)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return yamlKindError(n, t, path)
		}
		fields := map[string]reflect.Type{}
		for _, s := range settings(t) {
			fields[s.name] = s.field.Type
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.ShortTag() == "!!merge" {
				continue // "<<: *anchor": yaml.v3 checks the merged keys itself
			}
			ft, ok := fields[k.Value]
			if !ok {
				return &ports.FieldError{Field: join(path, k.Value), Fix: fmt.Sprintf("line %d: not a setting%s; %s takes %s",
					k.Line, didYouMean(k.Value, sortedKeys(fields)), orTop(path), strings.Join(sortedKeys(fields), ", "))}
			}
			if err := checkYAML(v, ft, join(path, k.Value)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return yamlKindError(n, t, path)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.ShortTag() == "!!merge" {
				continue
			}
			if err := checkYAML(v, t.Elem(), join(path, k.Value)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return yamlKindError(n, t, path)
		}
		for i, item := range n.Content {
			err := checkYAML(item, t.Elem(), path)
			var ce *ports.FieldError
			if errors.As(err, &ce) {
				// A list item has no variable of its own: name the list.
				rel := strings.TrimPrefix(strings.TrimPrefix(ce.Field, path), ".")
				if rel != "" {
					rel += ": "
				}
				return &ports.FieldError{Field: path, Fix: fmt.Sprintf("item %d: %s%s", i+1, rel, ce.Fix)}
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return decodeYAMLValue(n, t, path)
}

func decodeYAMLValue(n *yaml.Node, t reflect.Type, path string) error {
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		return yamlKindError(n, t, path)
	}
	return nil
}

func yamlKindError(n *yaml.Node, t reflect.Type, path string) error {
	if path == "" {
		return fmt.Errorf("line %d: the file must be a mapping of settings (key: value), e.g. drain_timeout: 10s", n.Line)
	}
	got := n.Value
	switch n.Kind {
	case yaml.MappingNode:
		got = "a mapping"
	case yaml.SequenceNode:
		got = "a list"
	default:
		got = strconv.Quote(got)
	}
	return &ports.FieldError{Field: path, Fix: fmt.Sprintf("line %d: cannot use %s: want %s", n.Line, got, wantKind(t))}
}

func wantKind(t reflect.Type) string {
	if t == durationType {
		return "a duration such as 500ms, 10s, 1m"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number, 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a single value (quote it if needed)"
	case reflect.Struct:
		return "a mapping of settings (key: value)"
	case reflect.Map:
		return "a mapping (name: value)"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return "a value of type " + t.String()
}

// didYouMean is "; did you mean <name>?" for the name of names nearest to
// key, when it is near enough to be a typo of it, else "".
func didYouMean(key string, names []string) string {
	if c := Closest(key, names); c != "" {
		return "; did you mean " + c + "?"
	}
	return ""
}

func orTop(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

func toTree(v any) (map[string]any, error) {
	b, err := yaml.Marshal(v)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}
