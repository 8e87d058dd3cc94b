package app

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/mqtt"
)

// mqttModule provides the MQTT v5 transport (adapters/mqtt). It connects
// only when a binding uses it: the publisher connection on the first event
// binding, one connection per handler binding.
var mqttModule = AsTransport(TransportMQTT, func() mqtt.Config { return mqtt.Config{} }, openMQTT)

func openMQTT(_ context.Context, c mqtt.Config, env TransportEnv) (*Transport, error) {
	c.Service = env.Service
	t, err := mqtt.NewTransport(c, NewWatermillLogger(env.Logger))
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
}
