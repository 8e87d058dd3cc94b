// Package transport is what every adapter's Transport shares with the
// runtime (app.Transport): the settings of one subscriber. It uses the
// standard library only, so that the adapters and app can both name it.
package transport

// SubscriberConfig configures the subscriber of one handler binding. Every
// adapter takes it as it is; what is particular to one broker is in
// Options.
type SubscriberConfig struct {
	// Handler is the name of the handler the messages go to: in logs,
	// client identifiers, consumer tags.
	Handler string
	// Group is the consumer group: replicas in one group share the work.
	// Empty means every subscriber gets every message (where the transport
	// can do that).
	Group string
	// Concurrency is how many messages may be in flight (delivered, not yet
	// settled) at once: prefetch, Receive Maximum, link credit. Below 1
	// means 1.
	Concurrency int
	// Options are the binding's transport-specific settings (for example
	// MQTT "qos"). Transports reject keys they do not know.
	Options map[string]string
}
