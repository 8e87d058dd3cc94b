package app

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
)

// Migrations are the migration files of one component of the service's
// schema (see AsMigrations).
type Migrations struct {
	// Component names the files' history in schema_migrations; every
	// component is versioned on its own.
	Component string
	// FS holds the files NNNN_name.sql at its root.
	FS fs.FS
}

// AsMigrations adds a component's migration files, applied at start when
// PostgreSQL is on: after the framework's own tables and before any
// handler consumes, each file once (replicas starting together apply it
// once), in version order. Components are migrated in the order of their
// names. A store adapter ships its files next to it:
//
//	//go:embed migrations/*.sql
//	var files embed.FS
//	sub, _ := fs.Sub(files, "migrations")
//	app.AsMigrations("devices", sub)
//
// Register it whether or not PostgreSQL is on: with it off the files are
// not applied.
func AsMigrations(component string, fsys fs.FS) fx.Option {
	return fx.Provide(fx.Annotate(func() Migrations { return Migrations{Component: component, FS: fsys} }, fx.ResultTags(`group:"migrations"`)))
}

type postgresParams struct {
	fx.In
	Lifecycle  fx.Lifecycle
	Config     config.Config
	Logger     *slog.Logger
	Migrations []Migrations `group:"migrations"`
}

// newPostgres provides the service's *postgres.DB, nil when PostgreSQL is
// off. Its start hook, which runs before the runtime's (the runtime
// depends on the DB), opens the pool, applies the framework's migrations and then the
// service's, and starts the retention of handled-message records; its
// stop hook, which runs after the runtime's stop protocol, stops the
// retention and closes the pool last.
func newPostgres(p postgresParams) (*postgres.DB, error) {
	cfg := p.Config.Postgres
	if !cfg.Enabled() {
		return nil, nil
	}
	migrations := slices.Clone(p.Migrations)
	slices.SortFunc(migrations, func(a, b Migrations) int { return strings.Compare(a.Component, b.Component) })
	for i, m := range migrations {
		switch {
		case m.Component == "" || m.FS == nil:
			return nil, fmt.Errorf("app.AsMigrations(%q): give a component name and the files", m.Component)
		case m.Component == postgres.FrameworkComponent:
			return nil, fmt.Errorf("app.AsMigrations(%q): the framework's component; name the service's own, e.g. its store", m.Component)
		case i > 0 && migrations[i-1].Component == m.Component:
			return nil, fmt.Errorf("app.AsMigrations(%q): registered twice; one component, one set of files", m.Component)
		}
	}
	logger := p.Logger
	// Prepared, not opened: building the graph (and -check-config) makes
	// no connection and starts no goroutine.
	db, err := postgres.Prepare(cfg.Config, runtime.NewWatermillLogger(logger))
	if err != nil {
		return nil, p.Config.InSection("postgres", err)
	}
	var (
		stopRetention context.CancelFunc
		retention     sync.WaitGroup
	)
	p.Lifecycle.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			if err := db.Open(); err != nil {
				return err
			}
			if err := migrate(ctx, db, migrations); err != nil {
				_ = db.Close()
				return err
			}
			var rctx context.Context
			rctx, stopRetention = context.WithCancel(context.Background())
			retention.Add(1)
			go func() {
				defer retention.Done()
				db.RunRetention(rctx, cfg.Retention)
			}()
			logger.Info("postgres migrated", "postgres", cfg.Config, "components", len(migrations)+1)
			return nil
		},
		OnStop: func(ctx context.Context) error {
			stopRetention()
			retention.Wait()
			return db.CloseContext(ctx)
		},
	})
	return db, nil
}

// migrate applies the framework's migrations, then each component's.
func migrate(ctx context.Context, db *postgres.DB, migrations []Migrations) error {
	if err := db.Migrate(ctx, postgres.FrameworkComponent, postgres.Migrations()); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	for _, m := range migrations {
		if err := db.Migrate(ctx, m.Component, m.FS); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
	}
	return nil
}
