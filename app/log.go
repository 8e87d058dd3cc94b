package app

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
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
