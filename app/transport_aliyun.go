package app

import (
	"context"
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/aliyun"
)

// aliyunModule provides the Aliyun IoT server-side subscription transport
// (AMQP 1.0, consume-only). Every handler bound to it shares the
// consumer's connections; a binding's topic filters on Aliyun's topic.
// Aliyun's formats are parsed by the adapter (aliyun.ParsePropertyPost,
// aliyun.ParseStatusChange); a service maps them onto its domain in a
// format of its own (AsFormat).
var aliyunModule = AsTransport(TransportAliyun, func() aliyun.Config { return aliyun.Config{} }, openAliyun)

// openAliyun connects the consumer: it returns once every connection has
// its receiver link attached, or fails (at once on an authentication
// failure) naming the client ID and consumer group.
func openAliyun(ctx context.Context, cfg aliyun.Config, env TransportEnv) (*Transport, error) {
	c, err := aliyun.New(cfg, NewWatermillLogger(env.Logger))
	if err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return nil, sectionError("transports."+TransportAliyun, err)
	}
	if err := c.Start(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	return &Transport{
		Name: TransportAliyun,
		Subscriber: func(s Subscription) (message.Subscriber, error) {
			return c.Subscriber(aliyun.SubscriberConfig{Name: s.Handler, Concurrency: s.Concurrency, Options: s.Options})
		},
		Ready: c.Ready,
		Close: c.Close,
	}, nil
}
