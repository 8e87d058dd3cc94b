package mqtt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// A password written in a server URL never prints: not in a configuration
// dump (YAML, JSON), not with fmt, not in a log; the rest of the URL does.
func TestServersNeverPrintPassword(t *testing.T) {
	const pw = "hunter2-in-a-url"
	var c Config
	c.SetDefaults()
	c.Servers = []string{"mqtts://u:" + pw + "@broker:8883", "mqtt://u:" + pw + " x@broker:1883", "u:" + pw + "@broker:1883", "mqtt://127.0.0.1:1883"}

	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "servers", c.Servers, "config", c)
	var text bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("config", "servers", c.Servers)

	for what, out := range map[string]string{
		"yaml": string(y), "json": string(j), "json log": logged.String(), "text log": text.String(),
		"%v": fmt.Sprintf("%v", c.Servers), "%s": fmt.Sprintf("%s", c.Servers), "%+v config": fmt.Sprintf("%+v", c),
	} {
		if strings.Contains(out, pw) {
			t.Errorf("%s shows the password:\n%s", what, out)
		}
		if !strings.Contains(out, "mqtts://u:xxxxx@broker:8883") || !strings.Contains(out, "mqtt://127.0.0.1:1883") {
			t.Errorf("%s does not show the servers redacted:\n%s", what, out)
		}
	}
}
