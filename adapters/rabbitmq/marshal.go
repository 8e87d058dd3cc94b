package rabbitmq

import (
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

// HeaderMessageUUID is the header in which watermill-amqp carries the
// message UUID. The publisher sends the UUID as the AMQP message_id property
// and reads it from there, falling back to this header for messages
// published by watermill-amqp.
const HeaderMessageUUID = "_watermill_message_uuid"

// maxShortstr is the longest value an AMQP short string property holds;
// a longer one stays a header.
const maxShortstr = 255

// marshal turns a watermill message into an AMQP publishing: the UUID
// becomes message_id; correlation_id, event_type and content_type become
// the correlation_id, type and content_type properties, which brokers and
// consumers know; the rest of the metadata becomes headers. RabbitMQ
// parses a header table on every publish, at a cost per header, so what
// has a property of its own does not travel as a header.
func marshal(msg *message.Message, persistent bool) amqp.Publishing {
	p := amqp.Publishing{MessageId: msg.UUID, Body: msg.Payload}
	if persistent {
		p.DeliveryMode = amqp.Persistent
	}
	for k, v := range msg.Metadata {
		if len(v) <= maxShortstr {
			switch k {
			case ports.MetadataCorrelationID:
				p.CorrelationId = v
				continue
			case ports.MetadataEventType:
				p.Type = v
				continue
			case ports.MetadataContentType:
				p.ContentType = v
				continue
			}
		}
		if p.Headers == nil {
			p.Headers = make(amqp.Table, len(msg.Metadata))
		}
		p.Headers[k] = v
	}
	return p
}

// maxHeaderBytes bounds the headers of one publishing. AMQP 0-9-1 sends
// a message's properties and headers in one frame, and RabbitMQ closes
// the whole connection (FRAME_ERROR frame_too_large) when it exceeds the
// negotiated frame_max (131 072 bytes by default, 4 096 at least): every
// other publish on the connection would fail with it. Half the default
// leaves room for the properties.
const maxHeaderBytes = 64 << 10

// ErrHeadersTooLarge is the error of a publish whose headers exceed
// maxHeaderBytes: it fails alone, before it reaches the connection.
// It is a transport.ErrMessageTooLarge.
var ErrHeadersTooLarge = fmt.Errorf("rabbitmq: the message's headers are too large for one AMQP frame: %w", transport.ErrMessageTooLarge)

// checkHeaders refuses a publishing whose headers would not fit the
// frame; it counts the string headers marshal writes.
func checkHeaders(p amqp.Publishing) error {
	n := 0
	for k, v := range p.Headers {
		n += len(k) + 6 // name length, type, value length
		if s, ok := v.(string); ok {
			n += len(s)
		}
	}
	if n > maxHeaderBytes {
		return fmt.Errorf("%w: %d bytes, at most %d (keep metadata values short)", ErrHeadersTooLarge, n, maxHeaderBytes)
	}
	return nil
}

// unmarshal turns a delivery into a watermill message, the inverse of
// marshal. The routing key is the topic (a fanout's empty one is left
// out; a message back from a delay queue has the one it was parked with,
// parkedTopic); the correlation_id, type and content_type properties and the
// redelivered flag become metadata, and so do headers: strings as they
// are, numbers and booleans formatted; tables and arrays (such as the
// broker's x-death) are left out. A header named like a framework key
// (transport.FrameworkKey) is dropped, so that a sender cannot change the
// topic, the properties or the poison keys with one; only a property's
// header that marshal writes (a value too long for the property, which is
// then empty) is read back.
func unmarshal(d *amqp.Delivery) *message.Message {
	id := d.MessageId
	if h, ok := d.Headers[HeaderMessageUUID].(string); ok && id == "" {
		id = h
	}
	msg := message.NewMessage(id, d.Body)
	props := map[string]string{
		ports.MetadataCorrelationID: d.CorrelationId,
		ports.MetadataEventType:     d.Type,
		ports.MetadataContentType:   d.ContentType,
	}
	for k, v := range d.Headers {
		if k == HeaderMessageUUID || k == headerParkedTopic {
			continue
		}
		if transport.FrameworkKey(k) {
			prop, ok := props[k]
			if s, isString := v.(string); ok && isString && prop == "" && len(s) > maxShortstr {
				msg.Metadata[k] = s
			}
			continue
		}
		switch v := v.(type) {
		case string:
			msg.Metadata[k] = v
		case int, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64, bool:
			msg.Metadata[k] = fmt.Sprint(v)
		}
	}
	for k, v := range props {
		if v != "" {
			msg.Metadata[k] = v
		}
	}
	if t, ok := parkedTopic(d); ok {
		msg.Metadata[ports.MetadataTopic] = t
	} else if d.RoutingKey != "" {
		msg.Metadata[ports.MetadataTopic] = d.RoutingKey
	}
	if d.Redelivered {
		msg.Metadata[ports.MetadataRedelivered] = "true"
	}
	return msg
}
