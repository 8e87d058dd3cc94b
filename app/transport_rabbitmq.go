package app

import (
	"github.com/hexmill/hexmill/adapters/rabbitmq"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
)

// rabbitMQModule provides the RabbitMQ transport (adapters/rabbitmq). It
// connects only when a binding uses it: Open dials, declares the
// configured topology and fails start with the broker's reason
// (credentials, TLS, a queue declared with other arguments). Every
// publisher and subscriber shares the connection, which is named after
// the service unless connection_name says otherwise.
var rabbitMQModule = AsTransport(config.TransportRabbitMQ, func() rabbitmq.Config { return rabbitmq.Config{} },
	func(cfg rabbitmq.Config, env TransportEnv) (transport.Transport, error) {
		if cfg.ConnectionName == "" {
			cfg.ConnectionName = env.Service
		}
		return rabbitmq.New(cfg, runtime.NewWatermillLogger(env.Logger))
	})
