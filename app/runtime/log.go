package runtime

import (
	"context"
	"io"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
	"go.opentelemetry.io/otel/trace"

	"github.com/hexmill/hexmill/app/config"
)

// NewWatermillLogger adapts logger for watermill and the adapters. Unlike
// watermill's own slog adapter, it does no work for a level the logger
// does not log: watermill's components trace every message, and building
// those log fields can cost more than the rest of their work per message.
func NewWatermillLogger(logger *slog.Logger) watermill.LoggerAdapter {
	return levelGate{LoggerAdapter: watermill.NewSlogLogger(logger), logger: logger}
}

type levelGate struct {
	watermill.LoggerAdapter
	logger *slog.Logger
}

func (g levelGate) Trace(msg string, fields watermill.LogFields) {
	if g.logger.Enabled(context.Background(), watermill.LevelTrace) {
		g.LoggerAdapter.Trace(msg, fields)
	}
}

func (g levelGate) Debug(msg string, fields watermill.LogFields) {
	if g.logger.Enabled(context.Background(), slog.LevelDebug) {
		g.LoggerAdapter.Debug(msg, fields)
	}
}

// Warn logs at WARN (watermill's LoggerAdapter has no such level; the
// adapters look for this method).
func (g levelGate) Warn(msg string, fields watermill.LogFields) {
	args := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		args = append(args, k, v)
	}
	g.logger.Warn(msg, args...)
}

func (g levelGate) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return levelGate{LoggerAdapter: g.LoggerAdapter.With(fields), logger: g.logger}
}

// traceHandler adds trace_id and span_id to a log record whose context
// carries a span.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}

// NewLogger returns the service's structured logger.
func NewLogger(cfg config.LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(traceHandler{h})
}
