package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/hexmill/hexmill/adapters/transport/secret"
)

func TestStringNeverPrintsItsValue(t *testing.T) {
	const value = "s3cr3t-value"
	s := secret.String(value)
	type config struct {
		Password secret.String `yaml:"password" json:"password"`
	}
	c := config{Password: s}

	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("dump", "password", s, "config", c)
	jsonDump, _ := json.Marshal(c)
	yamlDump, _ := yaml.Marshal(c)

	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", s),
		"%s":   fmt.Sprintf("%s", s),
		"%q":   fmt.Sprintf("%q", s),
		"%x":   fmt.Sprintf("%x", s),
		"%+v":  fmt.Sprintf("%+v", c),
		"%#v":  fmt.Sprintf("%#v", c),
		"slog": logged.String(),
		"json": string(jsonDump),
		"yaml": string(yamlDump),
	}
	for name, out := range outputs {
		if strings.Contains(out, value) {
			t.Errorf("%s prints the secret: %s", name, out)
		}
		if !strings.Contains(out, "redacted") && name != "%x" {
			t.Errorf("%s does not say the value is redacted: %s", name, out)
		}
	}
	if s.Reveal() != value {
		t.Errorf("Reveal() = %q, want the value", s.Reveal())
	}
}

func TestStringReadsFromYAMLAndJSON(t *testing.T) {
	var c struct {
		Password secret.String `yaml:"password" json:"password"`
	}
	if err := yaml.Unmarshal([]byte("password: abc"), &c); err != nil || c.Password.Reveal() != "abc" {
		t.Fatalf("yaml: %v %q", err, c.Password.Reveal())
	}
	if err := json.Unmarshal([]byte(`{"password":"def"}`), &c); err != nil || c.Password.Reveal() != "def" {
		t.Fatalf("json: %v %q", err, c.Password.Reveal())
	}
}
