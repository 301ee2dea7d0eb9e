package config

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// EnvPrefix starts every environment variable that overrides a key.
const EnvPrefix = "WSMESH_"

// envKey is one overridable key: its TOML name and the field it sets.
type envKey struct {
	name  string // "session.send_queue"
	field reflect.Value
}

// envKeys maps WSMESH_<SECTION>_<KEY> to the field it overrides.
func (c *Config) envKeys() map[string]envKey {
	keys := map[string]envKey{}
	root := reflect.ValueOf(c).Elem()
	for i := 0; i < root.NumField(); i++ {
		section := root.Type().Field(i).Tag.Get("toml")
		if section == "" || section == "-" {
			continue
		}
		sv := root.Field(i)
		for j := 0; j < sv.NumField(); j++ {
			key := sv.Type().Field(j).Tag.Get("toml")
			v := EnvPrefix + strings.ToUpper(section+"_"+key)
			keys[v] = envKey{name: section + "." + key, field: sv.Field(j)}
		}
	}
	return keys
}

// applyEnv sets every key named by a WSMESH_ variable. A WSMESH_ variable
// that names no key is an error, so a typo does not pass silently.
func (c *Config) applyEnv(env []string) error {
	keys := c.envKeys()
	// Sorted, so the first bad variable reported is always the same one.
	for _, kv := range slices.Sorted(slices.Values(env)) {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		k, ok := keys[name]
		if !ok {
			return fmt.Errorf("config: variable %s: no such key (want %s<SECTION>_<KEY>, e.g. WSMESH_HTTP_LISTEN)", name, EnvPrefix)
		}
		if err := setField(k.field, val); err != nil {
			return fmt.Errorf("config: %s (variable %s): %w", k.name, name, err)
		}
		c.origin[k.name] = "variable " + name
	}
	return nil
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// setField parses s into f by f's type; lists are comma-separated.
func setField(f reflect.Value, s string) error {
	if f.CanAddr() && f.Addr().Type().Implements(textUnmarshaler) {
		return f.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s))
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("invalid boolean %q (want true or false)", s)
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		f.SetInt(n)
	case reflect.Slice:
		var items []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				items = append(items, p)
			}
		}
		f.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("unsupported type %s", f.Type())
	}
	return nil
}
