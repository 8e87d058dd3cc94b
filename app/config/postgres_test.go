package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hexmill/hexmill/adapters/transport/secret"
)

// The postgres section: off by default, on with url or host, every
// setting from YAML and from HEXMILL_POSTGRES_*, the password never in a
// dump.
func TestLoadPostgres(t *testing.T) {
	l, err := load(env{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Postgres.Enabled() {
		t.Errorf("postgres is on by default: %+v", l.Postgres)
	}

	e := writeYAML(t, `
postgres:
  host: db.internal
  port: 6432
  database: fleet
  schema: fleet
  max_conns: 20
  retention:
    keep: 72h
  relay:
    poll_interval: 1s
handlers:
  telemetry:
    transport: memory
    topic: devices.telemetry
    idempotent: true
`)
	e["HEXMILL_POSTGRES_PASSWORD"] = "hunter2"
	e["HEXMILL_POSTGRES_RETENTION_EVERY"] = "10m"
	e["HEXMILL_POSTGRES_RELAY_BATCH_SIZE"] = "50"
	e["HEXMILL_HANDLERS_DEVICE_STATUS_IDEMPOTENT"] = "true"
	l, err = load(e)
	if err != nil {
		t.Fatal(err)
	}
	p := l.Postgres
	if !p.Enabled() {
		t.Fatal("postgres.host is set but the section is off")
	}
	eq(t, "host", p.Host, "db.internal")
	eq(t, "port", p.Port, 6432)
	eq(t, "database", p.Database, "fleet")
	eq(t, "schema", p.Schema, "fleet")
	eq(t, "max_conns", p.MaxConns, 20)
	eq(t, "password", p.Password, secret.String("hunter2"))
	eq(t, "retention.keep", p.Retention.Keep, 72*time.Hour)
	eq(t, "retention.every", p.Retention.Every, 10*time.Minute)
	eq(t, "relay.poll_interval", p.Relay.PollInterval, time.Second)
	eq(t, "relay.batch_size", p.Relay.BatchSize, 50)
	// Unset, filled with the defaults in effect (for -print-config).
	eq(t, "user", p.User, "postgres")
	eq(t, "connect_timeout", p.ConnectTimeout, 5*time.Second)
	eq(t, "relay.retry_backoff", p.Relay.RetryBackoff, 500*time.Millisecond)
	eq(t, "handlers.telemetry.idempotent", l.Handlers["telemetry"].Idempotent, true)
	eq(t, "handlers.device-status.idempotent", l.Handlers["device-status"].Idempotent, true)

	out, err := l.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "hunter2") || !strings.Contains(string(out), "password: '[redacted]'") {
		t.Errorf("-print-config shows the password or not its redaction:\n%s", out)
	}
	if !strings.Contains(string(out), "host: db.internal") || !strings.Contains(string(out), "idempotent: true") {
		t.Errorf("-print-config lacks the postgres section or idempotent:\n%s", out)
	}

	// A URL alone turns it on.
	l, err = load(env{"HEXMILL_POSTGRES_URL": "postgres://fleet@db:5432/fleet?sslmode=require"})
	if err != nil {
		t.Fatal(err)
	}
	if !l.Postgres.Enabled() {
		t.Error("postgres.url is set but the section is off")
	}
	// The URL names the target: host and the rest are not filled in.
	eq(t, "host with a url", l.Postgres.Host, "")
	eq(t, "port with a url", l.Postgres.Port, 0)
	eq(t, "schema with a url", l.Postgres.Schema, "public")
}
