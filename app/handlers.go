package app

import (
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/domain"
	"github.com/hexmill/hexmill/ports"
)

// handlers registers the domain's handlers: one line each. A handler's
// constructor may ask for domain.Config, ports.Publisher, ports.Clock and
// ports.DeviceStore; its binding is handlers.<Name()> in the configuration.
var handlers = fx.Options(
	AsHandler(domain.NewTelemetryHandler),
	AsHandler(domain.NewDeviceStatusHandler),
)

// AsHandler provides a handler constructor's result to the runtime.
func AsHandler(constructor any) fx.Option {
	return fx.Provide(fx.Annotate(constructor, fx.As(new(ports.Handler)), fx.ResultTags(`group:"handlers"`)))
}
