package ports

import "context"

// CorrelationIDKey is the context key of the correlation ID, a string,
// which WithCorrelationID sets and CorrelationID reads. A context type of
// its own may answer it from its Value method (the runtime's message
// context does), where WithCorrelationID would add a layer.
type CorrelationIDKey struct{}

// WithCorrelationID returns ctx carrying a correlation ID; the app sets it
// for every handled message, and the publisher adds it to events.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, CorrelationIDKey{}, id)
}

// CorrelationID returns the correlation ID ctx carries, or "".
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(CorrelationIDKey{}).(string)
	return id
}
