package app

import (
	"github.com/hexmill/hexmill/adapters/aliyun"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
)

// aliyunModule provides the Aliyun IoT server-side subscription transport
// (adapters/aliyun: AMQP 1.0, consume-only). Every handler bound to it
// shares its connections; a binding's topic filters on Aliyun's topic.
// Open returns once every connection has its receiver link attached, or
// fails (at once on an authentication failure) naming the client ID and
// consumer group. Aliyun's formats are parsed by the adapter
// (aliyun.ParsePropertyPost, aliyun.ParseStatusChange); a service maps
// them onto its domain in a format of its own (AsFormat).
var aliyunModule = AsTransport(config.TransportAliyun, func() aliyun.Config { return aliyun.Config{} },
	func(cfg aliyun.Config, env TransportEnv) (transport.Transport, error) {
		cfg.Service = env.Service // {service} in client IDs
		return aliyun.New(cfg, runtime.NewWatermillLogger(env.Logger))
	})
