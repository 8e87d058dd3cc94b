package app

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/memory"
)

// memoryModule provides the in-memory transport. Its broker is a value of
// its own in the graph, so tests and the demo can publish to it directly.
var memoryModule = fx.Module("memory",
	fx.Provide(
		newMemoryBroker,
		fx.Annotate(newMemoryOpener, fx.ResultTags(`group:"transports"`)),
	),
)

func newMemoryBroker(cfg Config, logger *slog.Logger) (*memory.Broker, error) {
	return memory.NewBroker(cfg.Transports.Memory, NewWatermillLogger(logger))
}

func newMemoryOpener(broker *memory.Broker) Opener {
	return Opener{
		Name: TransportMemory,
		Open: func(context.Context) (*Transport, error) {
			return &Transport{
				Name:      TransportMemory,
				Publisher: func(map[string]string) (message.Publisher, error) { return broker, nil },
				Subscriber: func(s Subscription) (message.Subscriber, error) {
					return broker.Subscriber(s.Group, s.Concurrency), nil
				},
				Ready: func() error { return nil },
			}, nil
		},
	}
}

// MemoryOpener returns the in-memory transport on broker, for building a
// Runtime without fx.
func MemoryOpener(broker *memory.Broker) Opener { return newMemoryOpener(broker) }
