package ports

import "context"

type correlationKey struct{}

// WithCorrelationID returns ctx carrying a correlation ID; the app sets it
// for every handled message, and the publisher adds it to events.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey{}, id)
}

// CorrelationID returns the correlation ID ctx carries, or "".
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey{}).(string)
	return id
}
