package app

import (
	"context"
	"log/slog"

	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/transport"
)

// memoryModule provides the in-memory transport (adapters/memory). Unlike
// the others (AsTransport) it is a value of its own in the graph, made at
// construction, so tests, the ops server's /inject and a service's demo
// can publish to it directly.
var memoryModule = fx.Module("memory",
	fx.Provide(
		func() *section[memory.Config] {
			return &section[memory.Config]{value: memory.Config{QueueLimit: memory.DefaultQueueLimit}}
		},
		fx.Annotate(func(s *section[memory.Config]) ConfigSection {
			return ConfigSection{Path: "transports." + TransportMemory, Value: &s.value, Transport: TransportMemory}
		}, fx.ResultTags(`group:"config_sections"`)),
		newMemoryTransport,
		fx.Annotate(MemoryOpener, fx.ResultTags(`group:"transports"`)),
	),
)

func newMemoryTransport(_ Config, s *section[memory.Config], logger *slog.Logger) (*memory.Transport, error) {
	return memory.New(s.value, NewWatermillLogger(logger))
}

// MemoryOpener returns the opener of the in-memory transport t, for
// building a Runtime without fx.
func MemoryOpener(t *memory.Transport) Opener {
	return Opener{
		Name: TransportMemory,
		Open: func(ctx context.Context) (transport.Transport, error) {
			return open(ctx, TransportMemory, func() (transport.Transport, error) { return t, nil })
		},
	}
}
