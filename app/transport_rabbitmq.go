package app

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
)

// rabbitMQModule provides the RabbitMQ transport. It connects only when a
// binding uses it: Open dials, declares the configured topology and fails
// start with the broker's reason (credentials, TLS, a queue declared with
// other arguments).
var rabbitMQModule = fx.Module("rabbitmq",
	fx.Provide(
		fx.Annotate(newRabbitMQOpener, fx.ResultTags(`group:"transports"`)),
	),
)

func newRabbitMQOpener(cfg Config, logger *slog.Logger) Opener {
	return Opener{
		Name: TransportRabbitMQ,
		Open: func(ctx context.Context) (*Transport, error) {
			return openRabbitMQ(ctx, cfg.Transports.RabbitMQ, watermill.NewSlogLogger(logger.With("transport", TransportRabbitMQ)))
		},
	}
}

// openRabbitMQ connects a client and exposes it as a Transport. Every
// publisher and subscriber shares the client's connection; each has its
// own channels.
func openRabbitMQ(ctx context.Context, cfg rabbitmq.Config, logger watermill.LoggerAdapter) (*Transport, error) {
	client, err := rabbitmq.New(cfg, logger)
	if err != nil {
		return nil, prefixField("transports.rabbitmq.", err)
	}
	if err := client.Connect(ctx); err != nil {
		return nil, err
	}
	return &Transport{
		Name: TransportRabbitMQ,
		Publisher: func(options map[string]string) (message.Publisher, error) {
			return client.PublisherFor(options)
		},
		Subscriber: func(s Subscription) (message.Subscriber, error) {
			sc, err := rabbitmq.SubscriberConfigFor(s.Handler, s.Group, s.Concurrency, s.Options)
			if err != nil {
				return nil, err
			}
			sc.ConsumerSettles = true // the in-flight middleware
			return client.NewSubscriber(sc)
		},
		Ready: client.Ready,
		Close: client.Close,
	}, nil
}
