package rabbitmq

import (
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// HeaderMessageUUID is the header in which watermill-amqp carries the
// message UUID. hexmill sends the UUID as the AMQP message_id property
// and reads it from there, falling back to this header for messages
// published by watermill-amqp.
const HeaderMessageUUID = "_watermill_message_uuid"

// marshal turns a watermill message into an AMQP publishing: metadata
// becomes headers, the UUID message_id.
func marshal(msg *message.Message, persistent bool) amqp.Publishing {
	var headers amqp.Table
	if len(msg.Metadata) > 0 {
		headers = make(amqp.Table, len(msg.Metadata))
		for k, v := range msg.Metadata {
			headers[k] = v
		}
	}
	p := amqp.Publishing{
		MessageId: msg.UUID,
		Headers:   headers,
		Body:      msg.Payload,
	}
	if persistent {
		p.DeliveryMode = amqp.Persistent
	}
	return p
}

// unmarshal turns a delivery into a watermill message. Headers become
// metadata: strings as they are, numbers and booleans formatted; tables
// and arrays (such as the broker's x-death) are left out.
func unmarshal(d *amqp.Delivery) *message.Message {
	id := d.MessageId
	if h, ok := d.Headers[HeaderMessageUUID].(string); ok && id == "" {
		id = h
	}
	msg := message.NewMessage(id, d.Body)
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
