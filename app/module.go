// Package app wires hexmill together: configuration, the transports, the
// domain's handlers, the runtime that runs them (a consumer per handler,
// watermill middleware) with the stop protocol, and the ops HTTP server.
// It is the one package that knows every adapter.
package app

import (
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/domain"
	"github.com/hexmill/hexmill/ports"
)

// stopMargin is how much longer than the drain timeout fx gives the stop
// hooks: closing publishers and connections comes after the drain.
const stopMargin = 15 * time.Second

// New returns the service as an fx application. extra options are added
// last (tests use them to replace or observe parts).
func New(cfg Config, extra ...fx.Option) *fx.App {
	logger := NewLogger(cfg.Log, os.Stderr)
	return fx.New(
		fx.Supply(cfg, logger),
		fx.WithLogger(func() fxevent.Logger {
			l := &fxevent.SlogLogger{Logger: logger}
			l.UseLogLevel(slog.LevelDebug)
			return l
		}),
		fx.StopTimeout(cfg.DrainTimeout+stopMargin),
		fx.StartTimeout(time.Minute),
		Module,
		fx.Options(extra...),
	)
}

// Module is the service without its configuration and logger: supply a
// Config and a *slog.Logger to use it.
var Module = fx.Module("hexmill",
	memoryModule,
	mqttModule,
	rabbitMQModule,
	aliyunModule,
	handlers,
	fx.Provide(
		newRegistry,
		newRuntime,
		newOpsServer,
		NewPublisher,
		func(p *Publisher) ports.Publisher { return p },
		func(cfg Config) domain.Config { return cfg.Domain },
		func() ports.Clock { return systemClock{} },
		fx.Annotate(memory.NewDeviceStore, fx.As(new(ports.DeviceStore))),
	),
	fx.Invoke(func(*OpsServer) {}, registerRuntime, registerDemo),
)

type runtimeParams struct {
	fx.In
	Config     Config
	Logger     *slog.Logger
	Registry   *prometheus.Registry
	Transports []Opener        `group:"transports"`
	Handlers   []ports.Handler `group:"handlers"`
	Formats    []namedFormat   `group:"formats"`
	Publisher  *Publisher
	// TracerProvider replaces the one the tracing section describes
	// (tests supply one with an in-memory exporter).
	TracerProvider trace.TracerProvider `optional:"true"`
}

// namedFormat is how a transport module offers a wire-format translation.
type namedFormat struct {
	Name   string
	Format Format
}

func newRuntime(p runtimeParams) (*Runtime, error) {
	formats := map[string]Format{}
	for _, f := range p.Formats {
		formats[f.Name] = f.Format
	}
	return NewRuntime(RuntimeParams{
		Config: p.Config, Logger: p.Logger, Transports: p.Transports,
		Handlers: p.Handlers, Formats: formats, Registry: p.Registry, Publisher: p.Publisher,
		TracerProvider: p.TracerProvider,
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
