package app

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/memory"
)

// memoryModule provides the in-memory transport. Its broker is a value of
// its own in the graph, so tests, the ops server's /inject and a service's
// demo can publish to it directly.
var memoryModule = fx.Module("memory",
	fx.Provide(
		func() *section[memory.Config] {
			return &section[memory.Config]{value: memory.Config{QueueLimit: memory.DefaultQueueLimit}}
		},
		fx.Annotate(func(s *section[memory.Config]) ConfigSection {
			return ConfigSection{Path: "transports." + TransportMemory, Value: &s.value, Transport: TransportMemory}
		}, fx.ResultTags(`group:"config_sections"`)),
		newMemoryBroker,
		fx.Annotate(newMemoryOpener, fx.ResultTags(`group:"transports"`)),
	),
)

func newMemoryBroker(_ Config, s *section[memory.Config], logger *slog.Logger) (*memory.Broker, error) {
	return memory.NewBroker(s.value, NewWatermillLogger(logger))
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
