package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/integration"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  postgres.Config
		want string // "" for valid
	}{
		{"defaults", postgres.Config{}, ""},
		{"url", postgres.Config{URL: "postgres://app@db:5432/app?sslmode=require"}, ""},
		{"password in url", postgres.Config{URL: "postgres://app:hunter2@db/app"}, "move it to postgres.password"},
		{"scheme", postgres.Config{URL: "mysql://app@db/app"}, "want postgres://"},
		{"port", postgres.Config{Port: 70000}, "port: "},
		{"schema", postgres.Config{Schema: "Bad-Name"}, "schema: "},
		{"max conns", postgres.Config{MaxConns: 1}, "max_conns: "},
		{"min conns", postgres.Config{MaxConns: 4, MinConns: 5}, "min_conns: "},
		{"timeout", postgres.Config{ConnectTimeout: -time.Second}, "connect_timeout: "},
		{"hosts in url", postgres.Config{URL: "postgres://app@db1:5432,db2:5433/app?target_session_attrs=read-write"}, ""},
		{"hosts", postgres.Config{Host: "db1,db2:5433", TargetSessionAttrs: "read-write"}, ""},
		{"empty host", postgres.Config{Host: "db1,,db2"}, "host: "},
		{"target session attrs", postgres.Config{Host: "db1,db2", TargetSessionAttrs: "writable"}, "target_session_attrs: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

// The password reaches the server and nothing else: not a log line, not
// an error, not a dump.
func TestPasswordNeverShown(t *testing.T) {
	const password = "s3cr3t-pw"
	cfg := postgres.Config{URL: integration.PostgresURL(t), Password: password, Schema: testSchema(t)}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "postgres", cfg)
	// A refused connection: the error must not carry the password either.
	bad := cfg
	bad.URL = fmt.Sprintf("postgres://nobody@127.0.0.1:%d/test?sslmode=disable", integration.FreePort(t))
	db, err := postgres.New(bad, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	prepared, err := postgres.Prepare(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	readyErr := db.Ready(ctx)
	if readyErr == nil {
		t.Fatal("Ready returned nil with nothing listening")
	}
	for name, out := range map[string]string{
		"slog": logged.String(), "%v": fmt.Sprintf("%v", cfg), "%+v": fmt.Sprintf("%+v", cfg), "%#v": fmt.Sprintf("%#v", cfg),
		"ready error": readyErr.Error(),
		"DB %+v":      fmt.Sprintf("%+v", db), "prepared DB %#v": fmt.Sprintf("%#v", prepared),
	} {
		if strings.Contains(out, password) {
			t.Errorf("%s shows the password: %s", name, out)
		}
	}
}
