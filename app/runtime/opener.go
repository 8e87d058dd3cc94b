package runtime

import (
	"context"

	"github.com/hexmill/hexmill/adapters/transport"
)

// Opener opens a transport. Each transport module provides one into the
// "transports" value group; the runtime opens only the transports that some
// binding uses, in its start hook, so an unused transport never connects.
type Opener struct {
	Name string
	Open func(ctx context.Context) (transport.Transport, error)
}
