package bench

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/ports"
)

// The in-memory pipeline: publish -> queue -> handler -> ack, through
// hexmill's runtime (router, middleware, stop protocol) and through the
// memory broker alone. It measures what the framework itself costs.
func init() {
	register(Case{
		Name:    "memory/pipeline",
		Hexmill: memoryHexmill,
		Raw:     memoryRaw,
		// Its rounds take a fraction of a second: the first pays the
		// heap's growth, and the median needs more of them.
		Warmup:    true,
		MinRounds: 9,
		// Tracing on (docs/tracing.md): the spans' cost per message, with
		// their export over OTLP/HTTP to a sink in this process.
		Baselines: map[string]Run{
			"hexmill, tracing 1.0": memoryTraced(1),
			"hexmill, tracing 0.1": memoryTraced(0.1),
		},
	})
}

const memoryConcurrency = 64

func memoryHexmill(ctx context.Context, opts Options) (Result, error) {
	return memoryRuntime(ctx, opts, nil)
}

func memoryTraced(sampling float64) Run {
	return func(ctx context.Context, opts Options) (Result, error) {
		collector, err := startOTLPSink()
		if err != nil {
			return Result{}, err
		}
		defer collector.close()
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL("http://"+collector.addr+"/v1/traces"))
		if err != nil {
			return Result{}, err
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(sampling))))
		defer tp.Shutdown(context.Background())
		return memoryRuntime(ctx, opts, tp)
	}
}

// memoryRuntime runs the pipeline through the runtime, tracing with tp
// when it is not nil.
func memoryRuntime(ctx context.Context, opts Options, tp trace.TracerProvider) (Result, error) {
	broker, err := memory.New(memory.Config{QueueLimit: opts.Messages + 1}, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	rec := newRecorder(opts.Messages)
	cfg := config.Default("bench")
	cfg.Poison.Transport = config.TransportMemory
	cfg.Handlers = map[string]config.Binding{"bench": {Transport: config.TransportMemory, Topic: "bench.in", Group: "bench", Concurrency: memoryConcurrency}}
	cfg.Events = nil
	rt, err := runtime.New(runtime.Params{
		Config:         cfg,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		Transports:     []runtime.Opener{app.MemoryOpener(broker)},
		TracerProvider: tp,
		Handlers: []ports.Handler{ports.HandlerFunc{HandlerName: "bench", Func: func(_ context.Context, msg ports.Message) error {
			rec.record(msg.Payload)
			return nil
		}}},
	})
	if err != nil {
		return Result{}, err
	}
	if err := rt.Start(ctx); err != nil {
		return Result{}, err
	}
	defer rt.Stop(context.Background())
	return memoryPublish(ctx, opts, broker, rec)
}

func memoryRaw(ctx context.Context, opts Options) (Result, error) {
	broker, err := memory.New(memory.Config{QueueLimit: opts.Messages + 1}, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	rec := newRecorder(opts.Messages)
	sub, err := broker.Subscriber(memory.SubscriberConfig{Group: "bench", Concurrency: memoryConcurrency})
	if err != nil {
		return Result{}, err
	}
	defer sub.Close()
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, err := sub.Subscribe(subCtx, "bench.in")
	if err != nil {
		return Result{}, err
	}
	go func() {
		for msg := range msgs {
			rec.record(msg.Payload)
			msg.Ack()
		}
	}()
	return memoryPublish(ctx, opts, broker, rec)
}

func memoryPublish(ctx context.Context, opts Options, broker *memory.Transport, rec *recorder) (Result, error) {
	clk := startClock()
	if err := publishAll(opts, func(int) error {
		return broker.Publish("bench.in", message.NewMessage(watermill.NewUUID(), stamp(opts.Size)))
	}); err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return rec.wait(ctx, clk)
}
