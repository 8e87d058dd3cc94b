package app

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Env is the process environment: variable name -> value.
type Env map[string]string

// OSEnv returns the process's environment.
func OSEnv() Env {
	env := Env{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// applyEnv overrides the fields of c and of its sections from environment
// variables named after their YAML paths (see Config). A variable may
// also create a map entry: FLEET_HANDLERS_BATTERY_TOPIC creates
// handlers.battery. A variable with the service's prefix that sets
// nothing is an error naming the closest variable that would.
func (c *Config) applyEnv(env Env) error {
	used := map[string]bool{EnvConfigFileFromPrefix(c.prefix): true}
	e := envApplier{prefix: c.prefix, env: env, used: used}
	if err := e.apply(reflect.ValueOf(c).Elem(), ""); err != nil {
		return c.withEnv(err)
	}
	for _, s := range c.sections {
		if err := e.apply(reflect.ValueOf(s.Value).Elem(), s.Path); err != nil {
			return c.withEnv(err)
		}
	}
	return c.checkUnusedEnv(env, used, e.known)
}

// EnvConfigFileFromPrefix is the config file variable for prefix.
func EnvConfigFileFromPrefix(prefix string) string { return prefix + "CONFIG" }

// checkUnusedEnv refuses a variable that looks like a setting of this
// service but sets nothing, a typo that would otherwise leave a default in
// place. Variables whose first word is far from every top-level setting
// (FLEET_TEST_..., tools' own variables) are left alone.
func (c *Config) checkUnusedEnv(env Env, used map[string]bool, known []string) error {
	var tops []string
	for _, k := range known {
		first, _, _ := strings.Cut(strings.TrimPrefix(k, c.prefix), "_")
		if !slices.Contains(tops, first) {
			tops = append(tops, first)
		}
	}
	for _, k := range sortedKeys(env) {
		if used[k] || !strings.HasPrefix(k, c.prefix) || len(k) == len(c.prefix) {
			continue
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(k, c.prefix), "_")
		near, limit := false, 2
		if len(first) <= 4 {
			limit = 1
		}
		for _, t := range tops {
			if distance(first, t) <= limit {
				near = true
			}
		}
		if !near {
			continue
		}
		closest, best := "", -1
		for _, kn := range known {
			if d := distance(k, kn); best < 0 || d < best {
				closest, best = kn, d
			}
		}
		return &ConfigError{Field: "environment", Env: k, Fix: fmt.Sprintf("%s sets no setting; did you mean %s?", k, closest)}
	}
	return nil
}

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
	env    Env
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
			t := v.Type()
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if strings.Contains(opts, "inline") && f.IsExported() {
					// An inline struct's settings are its parent's.
					if err := e.apply(v.Field(i), path); err != nil {
						return err
					}
					continue
				}
				if name == "" || name == "-" || !f.IsExported() {
					continue
				}
				if err := e.apply(v.Field(i), join(path, name)); err != nil {
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
		return &ConfigError{Field: path, Fix: fmt.Sprintf("cannot use %q: %v", raw, err)}
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
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		field := envName("", name)
		ft := f.Type
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
