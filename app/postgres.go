package app

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"

	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/ports"
)

// PostgresConfig is the postgres section: where the database is and how
// the pool behaves (postgres.Config, inline: postgres.url,
// postgres.password, postgres.max_conns, ...), how long the records of
// handled messages are kept, and the outbox relay's timings.
//
// PostgreSQL is on when url or host is set, and off otherwise (the
// default: the service keeps its state in memory). Other settings without
// url or host are refused, so that a half-written section is not silently
// ignored. Unset settings take the adapter's defaults, filled in when the
// section is on.
type PostgresConfig struct {
	postgres.Config `yaml:",inline"`
	// Retention of the handled-message records of idempotent handlers.
	Retention postgres.RetentionConfig `yaml:"retention"`
	// Relay is the outbox relay's timings (its publishers, the event
	// bindings', are not configuration); zero values take its defaults.
	Relay postgres.RelayConfig `yaml:"relay"`
}

// Enabled reports whether the service uses PostgreSQL: url or host is set.
func (c PostgresConfig) Enabled() bool { return c.URL != "" || c.Host != "" }

// validate returns a *ports.FieldError relative to the section.
func (c PostgresConfig) validate() error {
	if !c.Enabled() {
		if field := firstSet(reflect.ValueOf(c), ""); field != "" {
			return &ports.FieldError{Field: field, Fix: "is set but PostgreSQL is off; set postgres.url (or postgres.host) to use it, or remove the postgres settings"}
		}
		return nil
	}
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if err := c.Retention.Validate(); err != nil {
		return prefixField("retention", err)
	}
	switch {
	case c.Relay.PollInterval < 0:
		return &ports.FieldError{Field: "relay.poll_interval", Fix: "want a positive duration, e.g. 200ms (0: the default)"}
	case c.Relay.BatchSize < 0:
		return &ports.FieldError{Field: "relay.batch_size", Fix: "want 1 or more, e.g. 100 (0: the default)"}
	case c.Relay.RetryBackoff < 0:
		return &ports.FieldError{Field: "relay.retry_backoff", Fix: "want a positive duration, e.g. 500ms (0: the default)"}
	}
	return nil
}

func prefixField(prefix string, err error) error {
	if fe, ok := err.(*ports.FieldError); ok {
		return &ports.FieldError{Field: prefix + "." + fe.Field, Fix: fe.Fix}
	}
	return &ports.FieldError{Field: prefix, Fix: err.Error()}
}

// firstSet is the YAML path of the first field of the struct v that is
// not zero, "" when all are.
func firstSet(v reflect.Value, path string) string {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		fv := v.Field(i)
		if strings.Contains(opts, "inline") {
			if p := firstSet(fv, path); p != "" {
				return p
			}
			continue
		}
		if fv.Kind() == reflect.Struct && fv.Type() != durationType {
			if p := firstSet(fv, join(path, name)); p != "" {
				return p
			}
			continue
		}
		if !fv.IsZero() {
			return join(path, name)
		}
	}
	return ""
}

// withDefaults fills the unset settings of a section that is on, so that
// -print-config shows what is in effect.
func (c PostgresConfig) withDefaults() PostgresConfig {
	if !c.Enabled() {
		return c
	}
	c.Config = c.Config.WithDefaults()
	c.Retention = c.Retention.WithDefaults()
	c.Relay = c.Relay.WithDefaults()
	return c
}

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
	Config     Config
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
	db, err := postgres.Prepare(cfg.Config, NewWatermillLogger(logger))
	if err != nil {
		return nil, p.Config.withEnv(sectionError("postgres", err))
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
