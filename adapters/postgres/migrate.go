package postgres

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var frameworkSQL embed.FS

// FrameworkComponent is the component name of the framework's own tables
// in schema_migrations.
const FrameworkComponent = "hexmill"

// Migrations returns the framework's own migrations (processed messages,
// outbox), to pass to Migrate.
func Migrations() fs.FS {
	sub, err := fs.Sub(frameworkSQL, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists: a build error otherwise
	}
	return sub
}

// migrationFile is NNNN_name.sql: the number is the version.
var migrationFile = regexp.MustCompile(`^(\d+)_([A-Za-z0-9_\-]+)\.sql$`)

type migration struct {
	version  int
	name     string
	sql      string
	checksum string
}

// Migrate applies the migrations in fsys (files NNNN_name.sql at its root)
// that component has not applied yet, in version order, each in its own
// transaction together with its row in schema_migrations. It holds a
// PostgreSQL advisory lock meanwhile, so that replicas starting together
// apply each version once. Migrations are forward-only: an applied file
// whose content changed is an error (add a new version instead).
//
// A fork keeps its tables under its own component name, e.g.
// db.Migrate(ctx, "devices", devicesSQL), next to the framework's
// (FrameworkComponent, Migrations()).
func (db *DB) Migrate(ctx context.Context, component string, fsys fs.FS) error {
	ms, err := readMigrations(fsys)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	defer conn.Release()
	// One lock per schema: hashtext is stable across servers and versions.
	const lockKey = `hashtext('hexmill.migrate.' || $1)`
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(`+lockKey+`)`, db.schema); err != nil {
		return fmt.Errorf("migrate %s: lock: %w", component, err)
	}
	defer func() {
		// A session lock outlives an error; if the unlock fails the
		// connection is broken, and closing it frees the lock.
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(`+lockKey+`)`, db.schema); err != nil {
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}()
	setup := `CREATE SCHEMA IF NOT EXISTS ` + pgx.Identifier{db.schema}.Sanitize() + `;
CREATE TABLE IF NOT EXISTS schema_migrations (
    component  text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)`
	if _, err := conn.Exec(ctx, setup); err != nil {
		return fmt.Errorf("migrate %s: schema_migrations: %w", component, err)
	}
	applied := map[int]string{}
	rows, err := conn.Query(ctx, `SELECT version, checksum FROM schema_migrations WHERE component = $1`, component)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	var v int
	var sum string
	if _, err := pgx.ForEachRow(rows, []any{&v, &sum}, func() error { applied[v] = sum; return nil }); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	for _, m := range ms {
		if sum, ok := applied[m.version]; ok {
			if sum != m.checksum {
				return fmt.Errorf("migrate %s: %04d_%s.sql changed after it was applied; migrations are forward-only: restore it and add a new version", component, m.version, m.name)
			}
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (component, version, name, checksum) VALUES ($1, $2, $3, $4)`,
				component, m.version, m.name, m.checksum)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s: %04d_%s.sql: %w", component, m.version, m.name, err)
		}
		db.logger.Info("Migration applied", map[string]any{"component": component, "version": m.version, "name": m.name})
	}
	return nil
}

func readMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	var ms []migration
	seen := map[int]string{}
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".sql" {
			continue
		}
		match := migrationFile.FindStringSubmatch(e.Name())
		if match == nil {
			return nil, fmt.Errorf("%s: want NNNN_name.sql (version number, underscore, name)", e.Name())
		}
		version, err := strconv.Atoi(match[1])
		if err != nil || version < 1 {
			return nil, fmt.Errorf("%s: the version must be a number from 1", e.Name())
		}
		if other, dup := seen[version]; dup {
			return nil, fmt.Errorf("%s and %s have the same version %d", other, e.Name(), version)
		}
		seen[version] = e.Name()
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, err
		}
		h := sha256.Sum256(b)
		ms = append(ms, migration{version: version, name: match[2], sql: string(b), checksum: hex.EncodeToString(h[:])})
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no NNNN_name.sql files")
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}
