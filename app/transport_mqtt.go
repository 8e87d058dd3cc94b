package app

import (
	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
)

// mqttModule provides the MQTT v5 transport (adapters/mqtt). It connects
// only when a binding uses it: the publisher connection on the first event
// binding, one connection per handler binding.
var mqttModule = AsTransport(config.TransportMQTT, func() mqtt.Config { return mqtt.Config{} },
	func(cfg mqtt.Config, env TransportEnv) (transport.Transport, error) {
		cfg.Service = env.Service // {service} in client IDs
		return mqtt.New(cfg, runtime.NewWatermillLogger(env.Logger))
	})
