package app

import (
	"context"
	"log/slog"

	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
)

// memoryModule provides the in-memory transport (adapters/memory). Unlike
// the others (AsTransport) it is a value of its own in the graph, made at
// construction, so tests, the ops server's /inject and a service's demo
// can publish to it directly.
var memoryModule = fx.Module("memory",
	fx.Provide(
		func() *section[memory.Config] {
			return &section[memory.Config]{value: memory.Config{QueueLimit: memory.DefaultQueueLimit, MaxQueueBytes: memory.DefaultMaxQueueBytes}}
		},
		fx.Annotate(func(s *section[memory.Config]) config.Section {
			return config.Section{Path: "transports." + config.TransportMemory, Value: &s.value, Transport: config.TransportMemory}
		}, fx.ResultTags(`group:"config_sections"`)),
		newMemoryTransport,
		fx.Annotate(MemoryOpener, fx.ResultTags(`group:"transports"`)),
	),
)

func newMemoryTransport(_ config.Config, s *section[memory.Config], logger *slog.Logger) (*memory.Transport, error) {
	return memory.New(s.value, runtime.NewWatermillLogger(logger))
}

// MemoryOpener returns the opener of the in-memory transport t, for
// building a Runtime without fx.
func MemoryOpener(t *memory.Transport) runtime.Opener {
	return runtime.Opener{
		Name: config.TransportMemory,
		Open: func(ctx context.Context) (transport.Transport, error) { return openTransport(ctx, t) },
	}
}
