package transport

import (
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/hexmill/hexmill/ports"
)

// Metadata keys the framework writes beside those a handler reads
// (ports.MetadataTopic and the others in ports, defined there only). An
// adapter passes them through like any other metadata.
const (
	// MetadataTraceParent and MetadataTraceState carry the W3C Trace
	// Context of a message: every transport carries them (MQTT user
	// properties, AMQP 0-9-1 headers, AMQP 1.0 application properties).
	// They are not framework keys (see FrameworkKey): what the runtime
	// does with a sender's trace context is tracing.incoming's decision.
	MetadataTraceParent = "traceparent"
	MetadataTraceState  = "tracestate"

	// MetadataDeliveryAttempt is the number of the delivery a message is
	// on, counted by delayed retries (docs/retries.md): absent on the
	// first, 2 after the first delay, and so on. MetadataAttemptReasons
	// holds the reason each earlier delivery failed, one line each, its
	// value bounded by MetadataValueBytes. A sender can set them too; they
	// are not framework keys, since a delayed message comes back through
	// the subscriber with them: the worst a sender gets is its own
	// message poisoned early, or a longer poison reason.
	MetadataDeliveryAttempt = "delivery_attempt"
	MetadataAttemptReasons  = "attempt_reasons"
)

// frameworkKeys are the metadata keys whose value the framework vouches
// for. A sender is anybody who can publish to the broker (a device, in
// the threat model of docs/security.md), so none of them is ever taken
// from a sender's MQTT user property, AMQP 0-9-1 header or AMQP 1.0
// application property; the adapter sets each from the wire, or leaves it
// out:
//
//   - topic (ports.MetadataTopic): the topic the broker delivered on. MQTT:
//     the PUBLISH packet's topic. RabbitMQ: the delivery's routing key.
//     AMQP 1.0 (Aliyun): Aliyun's "topic" application property, which IS
//     the wire topic there: Aliyun sets it from the device's MQTT topic
//     and a device cannot set application properties. Memory: the queue's
//     topic. Broker ACLs restrict who may publish to a topic, so the topic,
//     and a binding's topic_params taken from it, is the identity a handler
//     can trust.
//   - redelivered (ports.MetadataRedelivered): the broker's redelivery
//     flag (MQTT DUP, AMQP 0-9-1 redelivered, AMQP 1.0 delivery count).
//   - correlation_id (ports.MetadataCorrelationID): MQTT's Correlation
//     Data property, AMQP 0-9-1's correlation_id property; Aliyun: none.
//   - content_type (ports.MetadataContentType): MQTT's Content Type
//     property, AMQP 0-9-1's content_type property; Aliyun: none.
//   - event_type (ports.MetadataEventType): AMQP 0-9-1's type property,
//     which the framework's publisher sets; MQTT and Aliyun have no
//     property for it (the MQTT publisher sends it as a user property,
//     which a device can forge too), so their subscribers leave it out.
//   - the poison keys (reason_poisoned, topic_poisoned, handler_poisoned,
//     subscriber_poisoned): the runtime writes them on the copy it sends
//     to the poison target. A broker subscriber drops them on intake, so
//     no sender can make a message look poisoned by the service.
//
// The memory transport is in-process: its metadata is its wire, written
// by the runtime's publisher (correlation, event type, the poison keys)
// and the ops inject (correlation ID, trace context); it sets the topic
// and drops redelivered only.
//
// The IDs are no metadata: the MQTT subscriber takes a message's UUID from
// its PropertyUUID user property and the RabbitMQ one from the message_id
// property (else the _watermill_message_uuid header), both sender-chosen
// as an ID is; a binding with message_id: content derives it from the
// topic and payload instead. Aliyun's messageId and generateTime are
// application properties only Aliyun sets. Aliyun's productKey,
// deviceName and device_id are parsed from its topic, never taken from a
// property.
//
// Attributes a binding's topic_params extracts from the topic win over
// metadata of the same name, and a message whose topic does not match is
// poisoned (app/runtime).
var frameworkKeys = map[string]bool{
	ports.MetadataTopic:              true,
	ports.MetadataRedelivered:        true,
	ports.MetadataCorrelationID:      true,
	ports.MetadataContentType:        true,
	ports.MetadataEventType:          true,
	middleware.ReasonForPoisonedKey:  true,
	middleware.PoisonedTopicKey:      true,
	middleware.PoisonedHandlerKey:    true,
	middleware.PoisonedSubscriberKey: true,
}

// FrameworkKey reports whether key is a framework metadata key (see
// frameworkKeys): a subscriber sets it from the wire and never copies a
// sender's user property, header or application property of that name.
func FrameworkKey(key string) bool { return frameworkKeys[key] }
