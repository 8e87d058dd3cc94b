package app

import (
	"context"
	"errors"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/aliyun"
)

// aliyunModule provides the Aliyun IoT server-side subscription transport
// (AMQP 1.0, consume-only). Every handler bound to it shares the
// consumer's connections; a binding's topic filters on Aliyun's topic.
var aliyunModule = fx.Module("aliyun",
	fx.Provide(
		fx.Annotate(newAliyunOpener, fx.ResultTags(`group:"transports"`)),
		fx.Annotate(aliyunFormats, fx.ResultTags(`group:"formats,flatten"`)),
	),
)

func newAliyunOpener(cfg Config, logger *slog.Logger) Opener {
	return Opener{
		Name: TransportAliyun,
		Open: func(ctx context.Context) (*Transport, error) {
			return openAliyun(ctx, cfg.Transports.Aliyun, watermill.NewSlogLogger(logger.With("transport", TransportAliyun)))
		},
	}
}

// openAliyun connects the consumer: it returns once every connection has
// its receiver link attached, or fails (at once on an authentication
// failure) naming the client ID and consumer group.
func openAliyun(ctx context.Context, cfg aliyun.Config, logger watermill.LoggerAdapter) (*Transport, error) {
	c, err := aliyun.New(cfg, logger)
	if err != nil {
		return nil, prefixField("transports.aliyun.", errors.Unwrap(err))
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

// aliyunFormats are the wire-format translations the aliyun transport
// offers to Binding.Format: they rewrite the message in place before the
// handler sees it, and return a ports.Invalid error for malformed input.
func aliyunFormats() []namedFormat {
	return []namedFormat{
		{Name: "alink-property", Format: aliyun.AlinkPropertyToTelemetry},
		{Name: "aliyun-status", Format: aliyun.StatusToReport},
	}
}
