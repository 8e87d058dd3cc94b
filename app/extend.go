package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/transport"
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

// Middleware wraps every handler's processing of a message: it runs once
// per attempt (a retried message passes it again), inside the retry and
// the panic recovery, after the wire-format translation is decided and
// before the handler. On an idempotent binding it runs inside the
// transaction: only for a message not handled before, with the
// transaction in msg.Context() (what it writes commits or rolls back with
// the handler's changes). handler is the handler's name. An error it
// returns is the handler's: retried, then poisoned; ports.Invalid poisons
// at once.
type Middleware func(handler string, next message.HandlerFunc) message.HandlerFunc

// The chain, outermost first: handler name in the context, failure log,
// metrics, in-flight count and settling, poison target (publishes
// directly, never through the outbox), retry, on an idempotent binding
// the transaction and duplicate check (postgres.DedupMiddleware, one
// transaction per attempt), panic recovery (a panic rolls the transaction
// back), then the middlewares of AsMiddleware in the order they were
// provided, then the handler (format translation included).

// AsMiddleware provides a middleware constructor's result (a Middleware)
// to the runtime; it runs in every handler's chain at the place documented
// on Middleware, in the order of the fx options.
func AsMiddleware(constructor any) fx.Option {
	return fx.Provide(fx.Annotate(constructor, fx.ResultTags(`group:"middlewares"`)))
}

// Format translates a wire format at the edge: it rewrites the payload (and
// may add metadata) before the handler sees the message. An error wrapped
// with ports.Invalid sends the message to the poison target. A binding
// names it in format.
type Format func(msg *message.Message) error

// NamedFormat is a Format with the name bindings use for it.
type NamedFormat struct {
	Name   string
	Format Format
}

// AsFormat offers format to bindings under name (handlers.<h>.format).
func AsFormat(name string, format Format) fx.Option {
	return fx.Provide(fx.Annotate(func() NamedFormat { return NamedFormat{Name: name, Format: format} }, fx.ResultTags(`group:"formats"`)))
}

// ConfigSection is a part of the configuration owned by the service or a
// transport rather than by Config: the YAML mapping at Path (e.g. domain,
// transports.rabbitmq) and its environment variables are decoded into
// Value, a pointer holding the defaults. A Value with SetDefaults() has
// it called after decoding; one with Validate() error is validated with
// the rest (a *ports.FieldError names the setting in the section). A
// transport's section (Transport set) is validated only when a binding
// uses that transport.
type ConfigSection struct {
	Path      string
	Value     any
	Transport string
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
		fx.Provide(fx.Annotate(func(s *section[T]) ConfigSection {
			return ConfigSection{Path: path, Value: &s.value}
		}, fx.ResultTags(`group:"config_sections"`))),
		fx.Provide(func(_ Config, s *section[T]) T { return s.value }),
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
		fx.Provide(fx.Annotate(func(s *section[T]) ConfigSection {
			return ConfigSection{Path: "transports." + name, Value: &s.value, Transport: name}
		}, fx.ResultTags(`group:"config_sections"`))),
		fx.Provide(fx.Annotate(func(cfg Config, s *section[T], logger *slog.Logger) Opener {
			return Opener{Name: name, Open: func(ctx context.Context) (transport.Transport, error) {
				env := TransportEnv{Service: cfg.Service, Logger: logger.With("transport", name)}
				return open(ctx, name, func() (transport.Transport, error) { return newT(s.value, env) })
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
