package app

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
)

// rabbitMQModule provides the RabbitMQ transport. It connects only when a
// binding uses it: open dials, declares the configured topology and fails
// start with the broker's reason (credentials, TLS, a queue declared with
// other arguments).
var rabbitMQModule = AsTransport(TransportRabbitMQ, func() rabbitmq.Config { return rabbitmq.Config{} }, openRabbitMQ)

// openRabbitMQ connects a client and exposes it as a Transport. Every
// publisher and subscriber shares the client's connection; each has its
// own channels. The connection is named after the service unless
// connection_name says otherwise.
func openRabbitMQ(ctx context.Context, cfg rabbitmq.Config, env TransportEnv) (*Transport, error) {
	if cfg.ConnectionName == "" {
		cfg.ConnectionName = env.Service
	}
	client, err := rabbitmq.New(cfg, NewWatermillLogger(env.Logger))
	if err != nil {
		return nil, sectionError("transports."+TransportRabbitMQ, err)
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
		CheckTarget: client.CheckTarget,
		Ready:       client.Ready,
		Close:       client.Close,
	}, nil
}
