package rabbitmq

import (
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

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

// unmarshal turns a delivery into a watermill message. The correlation_id,
// type and content_type properties become metadata, and so do headers (a
// header wins over a property of the same name): strings as they are,
// numbers and booleans formatted; tables and arrays (such as the broker's
// x-death) are left out.
func unmarshal(d *amqp.Delivery) *message.Message {
	id := d.MessageId
	if h, ok := d.Headers[HeaderMessageUUID].(string); ok && id == "" {
		id = h
	}
	msg := message.NewMessage(id, d.Body)
	if d.CorrelationId != "" {
		msg.Metadata[ports.MetadataCorrelationID] = d.CorrelationId
	}
	if d.Type != "" {
		msg.Metadata[ports.MetadataEventType] = d.Type
	}
	if d.ContentType != "" {
		msg.Metadata[ports.MetadataContentType] = d.ContentType
	}
	if d.Redelivered {
		msg.Metadata[ports.MetadataRedelivered] = "true"
	}
	for k, v := range d.Headers {
		if k == HeaderMessageUUID {
			continue
		}
		switch v := v.(type) {
		case string:
			msg.Metadata[k] = v
		case int, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64, bool:
			msg.Metadata[k] = fmt.Sprint(v)
		}
	}
	return msg
}
