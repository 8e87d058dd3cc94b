package config_test

import (
	"slices"
	"strings"
	"testing"
)

// poison.transport postgres needs the postgres section, and is no
// transport that would be opened.
func TestPoisonPostgres(t *testing.T) {
	for _, c := range []struct {
		name, yaml, wantErr string
	}{
		{"with postgres", "postgres:\n  url: postgres://svc@db:5432/svc\n", ""},
		{"without postgres", "", "postgres keeps dead letters in the service's database, which is off"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := writeYAML(t, c.yaml+`
poison:
  transport: postgres
handlers:
  telemetry:
    transport: rabbitmq
    topic: telemetry
`)
			l, err := load(e)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if used := l.UsedTransports(); slices.Contains(used, "postgres") {
				t.Errorf("used transports %v: postgres is no transport to open", used)
			}
		})
	}
}
