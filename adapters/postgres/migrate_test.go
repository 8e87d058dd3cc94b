package postgres_test

import (
	"context"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/integration"
)

func forkMigrations() fstest.MapFS {
	return fstest.MapFS{
		"0001_devices.sql":  {Data: []byte(`CREATE TABLE devices (id text PRIMARY KEY, status text NOT NULL); CREATE TABLE applied (version int NOT NULL);INSERT INTO applied VALUES (1);`)},
		"0002_seen_at.sql":  {Data: []byte(`ALTER TABLE devices ADD COLUMN seen_at timestamptz; INSERT INTO applied VALUES (2);`)},
		"0003_index.sql":    {Data: []byte(`CREATE INDEX devices_status ON devices (status); INSERT INTO applied VALUES (3);`)},
		"README.md":         {Data: []byte("not a migration")},
		"sub/0009_skip.sql": {Data: []byte("not read: only the root")},
	}
}

// Replicas starting together: each migrates on its own pool at once; every
// version is applied exactly once.
func TestMigrateConcurrently(t *testing.T) {
	url := integration.PostgresURL(t)
	cfg := postgres.Config{URL: url, Schema: testSchema(t)}
	t.Cleanup(func() { dropSchema(t, cfg) })
	const replicas = 8
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, replicas)
	start := make(chan struct{})
	for range replicas {
		db, err := postgres.New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := db.Migrate(ctx, postgres.FrameworkComponent, postgres.Migrations()); err != nil {
				errs <- err
				return
			}
			errs <- db.Migrate(ctx, "devices", forkMigrations())
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	db := newDB(t, cfg)
	for v := 1; v <= 3; v++ {
		if n := count(t, db, `SELECT count(*) FROM applied WHERE version = $1`, v); n != 1 {
			t.Errorf("version %d applied %d times; want 1", v, n)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM schema_migrations WHERE component = 'devices'`); n != 3 {
		t.Errorf("schema_migrations has %d rows for devices; want 3", n)
	}
	// One row per embedded file: versions may have gaps (branches add
	// them independently).
	files, err := fs.ReadDir(postgres.Migrations(), ".")
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM schema_migrations WHERE component = $1`, postgres.FrameworkComponent); n != len(files) {
		t.Errorf("schema_migrations has %d rows for the framework; want %d", n, len(files))
	}
}

func TestMigrateRefuses(t *testing.T) {
	db := newDB(t, postgres.Config{})
	ctx := context.Background()
	if err := db.Migrate(ctx, "devices", forkMigrations()); err != nil {
		t.Fatal(err)
	}
	changed := forkMigrations()
	changed["0002_seen_at.sql"] = &fstest.MapFile{Data: []byte(`ALTER TABLE devices ADD COLUMN other text;`)}
	tests := []struct {
		name      string
		component string
		fs        fstest.MapFS
		want      string
	}{
		{"applied file changed", "devices", changed, "0002_seen_at.sql changed after it was applied"},
		{"bad name", "other", fstest.MapFS{"devices.sql": {Data: []byte("SELECT 1")}}, "want NNNN_name.sql"},
		{"same version", "other", fstest.MapFS{"0001_a.sql": {}, "01_b.sql": {}}, "have the same version 1"},
		{"empty", "other", fstest.MapFS{}, "no NNNN_name.sql files"},
		{"bad SQL rolls back", "other", fstest.MapFS{"0001_bad.sql": {Data: []byte("CREATE TABLE ok (i int); SELEC 1")}}, "0001_bad.sql"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := db.Migrate(ctx, tt.component, tt.fs)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want one containing %q", err, tt.want)
			}
		})
	}
	if n := count(t, db, `SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'ok'`, db.Schema()); n != 0 {
		t.Error("a failed migration left its table")
	}
	// Applying again is a no-op.
	if err := db.Migrate(ctx, "devices", forkMigrations()); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM applied`); n != 3 {
		t.Errorf("applied has %d rows after migrating twice; want 3", n)
	}
}
