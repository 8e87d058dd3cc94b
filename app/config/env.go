package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hexmill/hexmill/ports"
)

// EnvPrefix is the prefix of the environment variables of a service named
// name: upper case, "-" and "." as "_", e.g. FLEET_ for fleet.
func EnvPrefix(name string) string {
	return strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(name)) + "_"
}

// EnvConfigFile is the variable that names the optional YAML file of a
// service named name, e.g. FLEET_CONFIG; environment variables override
// what the file says.
func EnvConfigFile(name string) string { return EnvPrefix(name) + "CONFIG" }

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// envApplier sets values from the environment and records which
// variables it used and which it could have.
type envApplier struct {
	prefix string
	env    map[string]string
	used   map[string]bool
	known  []string
}

func (e *envApplier) lookup(path string) (string, bool) {
	name := envName(e.prefix, path)
	e.known = append(e.known, name)
	v, ok := e.env[name]
	if ok {
		e.used[name] = true
	}
	return v, ok
}

var durationType = reflect.TypeOf(time.Duration(0))

func (e *envApplier) apply(v reflect.Value, path string) error {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() != durationType && !isScalarType(v.Type()) {
			for _, st := range settings(v.Type()) {
				f, err := v.FieldByIndexErr(st.index)
				if err != nil {
					continue // under a nil inline pointer: nothing to set
				}
				if err := e.apply(f, join(path, st.name)); err != nil {
					return err
				}
			}
			return nil
		}
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return nil
		}
		for _, key := range e.newKeys(v, path) {
			if v.IsNil() {
				v.Set(reflect.MakeMap(v.Type()))
			}
			v.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), reflect.New(v.Type().Elem()).Elem())
		}
		for _, key := range v.MapKeys() {
			elem := reflect.New(v.Type().Elem()).Elem()
			elem.Set(v.MapIndex(key))
			if err := e.apply(elem, join(path, key.String())); err != nil {
				return err
			}
			v.SetMapIndex(key, elem)
		}
		return nil
	case reflect.Pointer:
		if v.IsNil() {
			if _, ok := e.lookup(path); !ok {
				return nil
			}
			v.Set(reflect.New(v.Type().Elem()))
		}
		return e.apply(v.Elem(), path)
	}

	raw, ok := e.lookup(path)
	if !ok {
		return nil
	}
	if err := setScalar(v, raw); err != nil {
		return &ports.FieldError{Field: path, Fix: fmt.Sprintf("cannot use %q: %v", raw, err)}
	}
	return nil
}

// isScalarType reports a struct type set from one string (it implements
// encoding.TextUnmarshaler).
func isScalarType(t reflect.Type) bool {
	return reflect.PointerTo(t).Implements(textUnmarshalerType)
}

// newKeys are the keys of entries the environment names under the map at
// path that the map does not hold yet: lower case, as written in the
// variable ("_" stays "_"; bindings are matched to handlers and events
// without regard to case, "-" and "_").
func (e *envApplier) newKeys(m reflect.Value, path string) []string {
	p := envName(e.prefix, path) + "_"
	existing := map[string]bool{}
	for _, k := range m.MapKeys() {
		existing[envName("", k.String())] = true
	}
	elem := m.Type().Elem()
	for elem.Kind() == reflect.Pointer {
		elem = elem.Elem()
	}
	var keys []string
	for _, name := range sortedKeys(e.env) {
		rest, ok := strings.CutPrefix(name, p)
		if !ok || rest == "" {
			continue
		}
		key := ""
		if elem.Kind() == reflect.Struct && !isScalarType(elem) && elem != durationType {
			key = entryKey(rest, elem)
		} else if elem.Kind() != reflect.Map && elem.Kind() != reflect.Struct {
			key = rest
		}
		if key == "" {
			continue
		}
		skip := false
		for k := range existing {
			if key == k || strings.HasPrefix(key, k+"_") {
				skip = true // an existing entry's (or a longer name's) variable
			}
		}
		if !skip && !slices.Contains(keys, strings.ToLower(key)) {
			keys = append(keys, strings.ToLower(key))
			existing[key] = true
		}
	}
	return keys
}

// entryKey splits rest, the part of a variable after a map's prefix, into
// an entry's key and one of the struct t's settings; "" when no setting of
// t ends it.
func entryKey(rest string, t reflect.Type) string {
	best := ""
	for _, st := range settings(t) {
		field := envName("", st.name)
		ft := st.field.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		nested := (ft.Kind() == reflect.Struct && ft != durationType && !isScalarType(ft)) || ft.Kind() == reflect.Map
		var key string
		if k, ok := strings.CutSuffix(rest, "_"+field); ok && !nested {
			key = k
		} else if nested {
			if j := strings.Index(rest, "_"+field+"_"); j > 0 {
				key = rest[:j]
			}
		}
		if key != "" && (best == "" || len(key) < len(best)) {
			best = key
		}
	}
	return best
}

func setScalar(v reflect.Value, raw string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("want a duration such as 500ms, 10s, 1m")
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("want true or false")
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("want a whole number")
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(raw, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("want a whole number, 0 or more")
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(raw, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("want a number")
		}
		v.SetFloat(f)
	case reflect.Slice:
		if v.Type().Elem() == durationType {
			return setDurations(v, raw)
		}
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot be set from the environment; use the YAML file")
		}
		var items []string
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		v.Set(reflect.ValueOf(items).Convert(v.Type()))
	default:
		return fmt.Errorf("cannot be set from the environment; use the YAML file")
	}
	return nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func envName(prefix, path string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return prefix + strings.ToUpper(r.Replace(path))
}

// setDurations sets a list of durations from a comma-separated list
// (e.g. retry.delayed: 30s,5m,30m); an empty value is an empty list.
func setDurations(v reflect.Value, raw string) error {
	items := []time.Duration{}
	for _, s := range strings.Split(raw, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("want comma-separated durations such as 30s,5m,30m")
		}
		items = append(items, d)
	}
	v.Set(reflect.ValueOf(items))
	return nil
}
