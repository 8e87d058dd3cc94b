package ports

// Keys of the transport metadata that fill Metadata. Adapters set them on
// incoming messages (as watermill message metadata) from the wire, never
// from a sender's user property or header (adapters/transport/metadata.go
// says where each comes from, per transport); the app reads them. Every
// other metadata entry reaches the handler as an attribute, except that a
// binding's topic_params win over entries of the same name.
const (
	// MetadataTopic is the concrete topic, queue or routing key a message
	// arrived on (for example devices/42/telemetry for a subscription to
	// devices/+/telemetry).
	MetadataTopic = "topic"
	// MetadataCorrelationID carries the correlation ID (the key watermill's
	// correlation middleware uses).
	MetadataCorrelationID = "correlation_id"
	// MetadataEventType names the type of an event the service publishes.
	MetadataEventType = "event_type"
	// MetadataContentType is the payload's media type, where the transport
	// carries one (MQTT v5, AMQP).
	MetadataContentType = "content_type"
	// MetadataRedelivered is "true" on a message its broker delivered
	// before (MQTT DUP, AMQP 0-9-1 redelivered, AMQP 1.0 delivery count).
	MetadataRedelivered = "redelivered"
)
