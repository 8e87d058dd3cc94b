// Package app wires a service together with fx: its configuration
// (app/config), the transports, the service's handlers, the runtime that
// runs them with the stop protocol (app/runtime), and the ops HTTP server.
// It is the one package that knows every adapter, and it knows no
// service: a service describes itself with a Service, runs with Main and
// extends the framework with the options of extend.go.
package app

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/ports"
)

// stopMargin is how much longer than the drain timeout the stop hooks get
// in all: closing publishers and connections comes after the drain.
const stopMargin = 15 * time.Second

// StopTimeout is how long stopping a service with cfg may take.
func StopTimeout(cfg config.Config) time.Duration { return cfg.DrainTimeout + stopMargin }

// New returns svc as an fx application, configured from env (the process
// environment outside tests). extra options are added last (tests use them
// to replace or observe parts). A configuration error is in the app's
// Err(), as a *ports.FieldError naming its environment variable
// (errors.As).
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
		runtime.New,
		newOpsServer,
		runtime.NewPublisher,
		func(p *runtime.Publisher) ports.Publisher { return p },
		func() ports.Clock { return systemClock{} },
	),
	fx.Invoke(func(*OpsServer) {}, registerRuntime),
)

type configParams struct {
	fx.In
	Service  Service
	Env      Env
	Sections []config.Section `group:"config_sections"`
}

func newConfig(p configParams) (config.Config, error) {
	return config.Load(p.Service.Name, p.Service.Defaults, p.Env, p.Sections...)
}

func newLogger(cfg config.Config) *slog.Logger {
	return runtime.NewLogger(cfg.Log, stderr).With("service", cfg.Service)
}

func newRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// registerRuntime starts the runtime on start and runs the stop protocol on
// stop. It is invoked after the ops server's hooks, so it stops first.
func registerRuntime(lc fx.Lifecycle, r *runtime.Runtime) {
	lc.Append(fx.Hook{OnStart: r.Start, OnStop: r.Stop})
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
