package app

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

// open makes a transport with newT and opens it; newT's error is about
// the configuration section of the transport name.
func open(ctx context.Context, name string, newT func() (transport.Transport, error)) (transport.Transport, error) {
	t, err := newT()
	if err != nil {
		return nil, sectionError("transports."+name, err)
	}
	if err := t.Open(ctx); err != nil {
		_ = t.Close()
		return nil, err
	}
	return t, nil
}
