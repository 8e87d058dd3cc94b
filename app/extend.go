package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/ports"
)

// The extension points: a service (and a new adapter) adds to the
// framework with these fx options, in its own files; it never edits the
// framework's.

// AsHandler provides a handler constructor's result to the runtime. The
// constructor may ask for anything in the graph: ports.Publisher,
// ports.Clock, a section value (AsConfig), the service's own stores. The
// handler's binding is handlers.<Name()> in the configuration.
func AsHandler(constructor any) fx.Option {
	return fx.Provide(fx.Annotate(constructor, fx.As(new(ports.Handler)), fx.ResultTags(`group:"handlers"`)))
}

// AsMiddleware provides a middleware constructor's result (a
// runtime.Middleware) to the runtime; it runs in every handler's chain at
// the place documented on runtime.Middleware, in the order of the fx
// options.
func AsMiddleware(constructor any) fx.Option {
	return fx.Provide(fx.Annotate(constructor, fx.ResultTags(`group:"middlewares"`)))
}

// AsFormat offers format to bindings under name (handlers.<h>.format).
func AsFormat(name string, format runtime.Format) fx.Option {
	return fx.Provide(fx.Annotate(func() runtime.NamedFormat { return runtime.NamedFormat{Name: name, Format: format} }, fx.ResultTags(`group:"formats"`)))
}

// section holds the decoded value of the section of type T.
type section[T any] struct{ value T }

// AsConfig adds a section of type T at path to the configuration, with the
// defaults returns, and provides the decoded T to the graph: a handler
// constructor asks for T. A T is one section: two AsConfig of one type
// conflict.
func AsConfig[T any](path string, defaults func() T) fx.Option {
	return fx.Options(
		fx.Provide(func() *section[T] { return &section[T]{value: defaults()} }),
		fx.Provide(fx.Annotate(func(s *section[T]) config.Section {
			return config.Section{Path: path, Value: &s.value}
		}, fx.ResultTags(`group:"config_sections"`))),
		fx.Provide(func(_ config.Config, s *section[T]) T { return s.value }),
	)
}

// TransportEnv is what the framework gives a transport to open with.
type TransportEnv struct {
	// Service is the service's name: client IDs and connection names
	// start with it, so that two services on one broker do not collide.
	Service string
	Logger  *slog.Logger
}

// AsTransport adds a transport named name: its configuration section at
// transports.<name> of type T (decoded and validated by the framework
// from T's yaml tags and its SetDefaults and Validate methods, only when a
// binding uses it), and newT, which makes the transport from the decoded
// section: the runtime calls it, then the transport's Open, at start when
// a binding uses the transport. newT connects nothing; its error is
// reported as one of the section. A new adapter plugs in with this one
// option.
func AsTransport[T any](name string, defaults func() T, newT func(cfg T, env TransportEnv) (transport.Transport, error)) fx.Option {
	return fx.Options(
		fx.Provide(func() *section[T] { return &section[T]{value: defaults()} }),
		fx.Provide(fx.Annotate(func(s *section[T]) config.Section {
			return config.Section{Path: "transports." + name, Value: &s.value, Transport: name}
		}, fx.ResultTags(`group:"config_sections"`))),
		fx.Provide(fx.Annotate(func(cfg config.Config, s *section[T], logger *slog.Logger) runtime.Opener {
			return runtime.Opener{Name: name, Open: func(ctx context.Context) (transport.Transport, error) {
				env := TransportEnv{Service: cfg.Service, Logger: logger.With("transport", name)}
				t, err := newT(s.value, env)
				if err != nil {
					return nil, cfg.InSection("transports."+name, err)
				}
				return openTransport(ctx, t)
			}}
		}, fx.ResultTags(`group:"transports"`))),
	)
}

// ReplaceJSON replaces msg's payload with v as JSON: what a Format does
// once it has mapped the wire format onto the service's type.
func ReplaceJSON(msg *message.Message, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %T: %w", v, err)
	}
	msg.Payload = b
	return nil
}

// openTransport opens t, and closes it again when it fails to open.
func openTransport(ctx context.Context, t transport.Transport) (transport.Transport, error) {
	if err := t.Open(ctx); err != nil {
		_ = t.Close()
		return nil, err
	}
	return t, nil
}
