package transport

// Metadata keys the framework writes beside those a handler reads
// (ports.MetadataTopic and the others in ports, defined there only). An
// adapter passes them through like any other metadata.
const (
	// MetadataTraceParent and MetadataTraceState carry the W3C Trace
	// Context of a message: every transport carries them (MQTT user
	// properties, AMQP 0-9-1 headers, AMQP 1.0 application properties).
	MetadataTraceParent = "traceparent"
	MetadataTraceState  = "tracestate"
)
