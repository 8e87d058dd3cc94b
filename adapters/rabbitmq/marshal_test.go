package rabbitmq

import (
	"maps"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/ports"
)

// Well-known metadata travels in AMQP properties, the rest in headers, and
// a delivery gives back the metadata that was published.
func TestMarshalProperties(t *testing.T) {
	long := strings.Repeat("x", maxShortstr+1)
	tests := []struct {
		name     string
		metadata message.Metadata
		want     amqp.Publishing // Body, MessageId and DeliveryMode aside
	}{
		{name: "none", metadata: message.Metadata{}},
		{
			name:     "properties only",
			metadata: message.Metadata{ports.MetadataCorrelationID: "c-1", ports.MetadataEventType: "AlertRaised", ports.MetadataContentType: "application/json"},
			want:     amqp.Publishing{CorrelationId: "c-1", Type: "AlertRaised", ContentType: "application/json"},
		},
		{
			name:     "headers beside properties",
			metadata: message.Metadata{ports.MetadataEventType: "AlertRaised", "site": "north"},
			want:     amqp.Publishing{Type: "AlertRaised", Headers: amqp.Table{"site": "north"}},
		},
		{
			name:     "too long for a property",
			metadata: message.Metadata{ports.MetadataCorrelationID: long},
			want:     amqp.Publishing{Headers: amqp.Table{ports.MetadataCorrelationID: long}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := message.NewMessage("id-1", []byte("{}"))
			msg.Metadata = maps.Clone(tt.metadata)
			got := marshal(msg, true)
			if got.MessageId != "id-1" || string(got.Body) != "{}" || got.DeliveryMode != amqp.Persistent {
				t.Fatalf("message_id %q, body %q, delivery mode %d", got.MessageId, got.Body, got.DeliveryMode)
			}
			if got.CorrelationId != tt.want.CorrelationId || got.Type != tt.want.Type || got.ContentType != tt.want.ContentType {
				t.Errorf("properties correlation_id %q type %q content_type %q, want %q %q %q",
					got.CorrelationId, got.Type, got.ContentType, tt.want.CorrelationId, tt.want.Type, tt.want.ContentType)
			}
			if !maps.Equal(got.Headers, tt.want.Headers) {
				t.Errorf("headers %v, want %v", got.Headers, tt.want.Headers)
			}
			back := unmarshal(&amqp.Delivery{
				MessageId: got.MessageId, Body: got.Body, Headers: got.Headers,
				CorrelationId: got.CorrelationId, Type: got.Type, ContentType: got.ContentType,
			})
			if back.UUID != "id-1" || !maps.Equal(back.Metadata, tt.metadata) {
				t.Errorf("delivered %s %v, want id-1 %v", back.UUID, back.Metadata, tt.metadata)
			}
		})
	}
}

// A header named like a framework key never becomes metadata: the topic is
// the routing key, the properties and the redelivered flag are the
// delivery's, and the poison keys are the runtime's (see
// transport.FrameworkKey).
func TestUnmarshalIgnoresFrameworkHeaders(t *testing.T) {
	msg := unmarshal(&amqp.Delivery{
		MessageId: "id-1", RoutingKey: "devices.42.status", CorrelationId: "c-1",
		Headers: amqp.Table{
			ports.MetadataTopic: "devices.666.status", ports.MetadataRedelivered: "true",
			ports.MetadataCorrelationID: "forged", ports.MetadataEventType: "Forged",
			ports.MetadataContentType: "text/forged", "reason_poisoned": "forged",
			"topic_poisoned": "forged", "handler_poisoned": "forged", "subscriber_poisoned": "forged",
			"site": "north",
		},
	})
	want := message.Metadata{ports.MetadataTopic: "devices.42.status", ports.MetadataCorrelationID: "c-1", "site": "north"}
	if !maps.Equal(msg.Metadata, want) {
		t.Errorf("metadata %v, want %v", msg.Metadata, want)
	}
}

// A redelivery is marked in metadata (for handlers and the consumer span);
// a first delivery is not.
func TestUnmarshalRedelivered(t *testing.T) {
	for _, redelivered := range []bool{false, true} {
		msg := unmarshal(&amqp.Delivery{MessageId: "id-1", Redelivered: redelivered})
		if got := msg.Metadata.Get(ports.MetadataRedelivered) == "true"; got != redelivered {
			t.Errorf("delivery redelivered=%v: metadata %v", redelivered, msg.Metadata)
		}
	}
}
