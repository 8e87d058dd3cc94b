package postgres_test

import (
	"context"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/integration"
)

// Several hosts, the first one down (nothing listens on its port): pgx
// tries them in turn, so the DB migrates, writes and is ready on the
// second, in both forms of the configuration.
func TestMultiHostFirstDown(t *testing.T) {
	u, err := url.Parse(integration.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	down := "127.0.0.1:" + strconv.Itoa(integration.FreePort(t))
	live := u.Host
	multi := *u
	multi.Host = down + "," + live
	q := multi.Query()
	q.Set("target_session_attrs", "read-write")
	multi.RawQuery = q.Encode()
	livePort, _ := strconv.Atoi(u.Port())
	forms := map[string]postgres.Config{
		"url": {URL: multi.String()},
		"host list": {Host: down + "," + u.Hostname(), Port: livePort, Database: u.Path[1:], User: u.User.Username(),
			SSLMode: "disable", TargetSessionAttrs: "read-write"},
	}
	for name, cfg := range forms {
		t.Run(name, func(t *testing.T) {
			cfg.ConnectTimeout = 2 * time.Second
			schema := testSchema(t)
			cfg.Schema = schema
			t.Cleanup(func() { dropSchema(t, postgres.Config{URL: u.String(), Schema: schema}) })
			db := newDB(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := db.Ready(ctx); err != nil {
				t.Fatalf("not ready on the second host: %v", err)
			}
			ran, err := db.HandleOnce(ctx, "h", "m1", func(context.Context) error { return nil })
			if err != nil || !ran {
				t.Fatalf("HandleOnce on the second host: ran %v, %v", ran, err)
			}
			if n := count(t, db, `SELECT count(*) FROM hexmill_processed_messages`); n != 1 {
				t.Fatalf("%d records, want 1", n)
			}
		})
	}
}
