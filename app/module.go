// Package app wires a service together: configuration, the
// transports, the service's handlers, the runtime that runs them (a
// consumer per handler, watermill middleware) with the stop protocol, and
// the ops HTTP server. It is the one package that knows every adapter, and
// it knows no service: a service describes itself with a Service and
// extends the framework with the options of extend.go.
package app

import (
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/ports"
)

// stopMargin is how much longer than the drain timeout the stop hooks get
// in all: closing publishers and connections comes after the drain.
const stopMargin = 15 * time.Second

// StopTimeout is how long stopping a service with cfg may take.
func StopTimeout(cfg Config) time.Duration { return cfg.DrainTimeout + stopMargin }

// New returns svc as an fx application, configured from env (the process
// environment outside tests). extra options are added last (tests use them
// to replace or observe parts). A configuration error is in the app's
// Err(), as a *ConfigError (errors.As).
func New(svc Service, env Env, extra ...fx.Option) *fx.App {
	return fx.New(
		fx.Supply(svc, env),
		fx.WithLogger(func(logger *slog.Logger) fxevent.Logger {
			l := &fxevent.SlogLogger{Logger: logger}
			l.UseLogLevel(slog.LevelDebug)
			return l
		}),
		fx.StartTimeout(time.Minute),
		Module,
		fx.Options(svc.Options...),
		fx.Options(extra...),
	)
}

// Module is the framework: configuration, the transports it brings, the
// PostgreSQL database (a *postgres.DB, nil unless the postgres section
// turns it on), the runtime and the ops server. Supply a Service and an
// Env to use it.
var Module = fx.Module("framework",
	memoryModule,
	mqttModule,
	rabbitMQModule,
	aliyunModule,
	fx.Provide(
		newConfig,
		newLogger,
		newRegistry,
		newPostgres,
		newRuntime,
		newOpsServer,
		NewPublisher,
		func(p *Publisher) ports.Publisher { return p },
		func() ports.Clock { return systemClock{} },
	),
	fx.Invoke(func(*OpsServer) {}, registerRuntime),
)

type configParams struct {
	fx.In
	Service  Service
	Env      Env
	Sections []ConfigSection `group:"config_sections"`
}

func newConfig(p configParams) (Config, error) {
	cfg, err := LoadConfig(p.Service, p.Env, p.Sections...)
	var ce *ConfigError
	if err != nil && !errors.As(err, &ce) {
		err = &ConfigFileError{Err: err}
	}
	return cfg, err
}

// ConfigFileError is a configuration file that cannot be read or parsed.
type ConfigFileError struct{ Err error }

func (e *ConfigFileError) Error() string { return e.Err.Error() }
func (e *ConfigFileError) Unwrap() error { return e.Err }

func newLogger(cfg Config) *slog.Logger {
	return NewLogger(cfg.Log, stderr).With("service", cfg.Service)
}

type runtimeParams struct {
	fx.In
	Config      Config
	Logger      *slog.Logger
	Registry    *prometheus.Registry
	Transports  []Opener        `group:"transports"`
	Handlers    []ports.Handler `group:"handlers"`
	Formats     []NamedFormat   `group:"formats"`
	Middlewares []Middleware    `group:"middlewares"`
	Publisher   *Publisher
	// TracerProvider replaces the one the tracing section describes
	// (tests supply one with an in-memory exporter).
	TracerProvider trace.TracerProvider `optional:"true"`
	// DB is nil when PostgreSQL is off. It is built before the runtime, so
	// its start hook (migrations) runs before the runtime's and its stop
	// hook (retention, close) after the runtime's stop protocol.
	DB *postgres.DB
}

func newRuntime(p runtimeParams) (*Runtime, error) {
	formats := map[string]Format{}
	for _, f := range p.Formats {
		formats[f.Name] = f.Format
	}
	return NewRuntime(RuntimeParams{
		Config: p.Config, Logger: p.Logger, Transports: p.Transports,
		Handlers: p.Handlers, Formats: formats, Middlewares: p.Middlewares,
		Registry: p.Registry, Publisher: p.Publisher, TracerProvider: p.TracerProvider, DB: p.DB,
	})
}

func newRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// registerRuntime starts the runtime on start and runs the stop protocol on
// stop. It is invoked after the ops server's hooks, so it stops first.
func registerRuntime(lc fx.Lifecycle, r *Runtime) {
	lc.Append(fx.Hook{OnStart: r.Start, OnStop: r.Stop})
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// NewLogger returns the service's structured logger.
func NewLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(traceHandler{h})
}
