package app

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/mqtt"
)

// mqttModule provides the MQTT v5 transport (adapters/mqtt). It connects
// only when a binding uses it: the publisher connection on the first event
// binding, one connection per handler binding.
var mqttModule = fx.Module("mqtt",
	fx.Provide(
		fx.Annotate(newMQTTOpener, fx.ResultTags(`group:"transports"`)),
	),
)

func newMQTTOpener(cfg Config, logger *slog.Logger) Opener {
	return Opener{
		Name: TransportMQTT,
		Open: func(context.Context) (*Transport, error) {
			c := cfg.Transports.MQTT
			c.Service = cfg.Service
			t, err := mqtt.NewTransport(c, NewWatermillLogger(logger))
			if err != nil {
				return nil, err
			}
			return &Transport{
				Name:      TransportMQTT,
				Publisher: func(options map[string]string) (message.Publisher, error) { return t.Publisher(options) },
				Subscriber: func(s Subscription) (message.Subscriber, error) {
					sub, err := t.Subscriber(mqtt.SubscriberConfig{
						Handler: s.Handler, Group: s.Group, Concurrency: s.Concurrency, Options: s.Options,
						ConsumerSettles: true, // the in-flight middleware
					})
					if err != nil {
						return nil, fmt.Errorf("handler %s: %w", s.Handler, err)
					}
					return sub, nil
				},
				Ready: t.Ready,
				Close: t.Close,
			}, nil
		},
	}
}
