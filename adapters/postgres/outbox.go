package postgres

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
)

// MetadataAggregateKey is the metadata key that names a message's
// aggregate (e.g. its device); OutboxPublisher keeps it in its own column.
const MetadataAggregateKey = "hexmill_aggregate"

// ErrNoTx is returned by OutboxPublisher for a message whose context
// carries no transaction.
var ErrNoTx = errors.New("no transaction in the message's context; publish to the outbox while handling under DedupMiddleware, HandleOnce or InTx, with msg.SetContext(ctx)")

// OutboxPublisher is a watermill publisher that writes messages to the
// outbox table in the transaction their context carries (msg.Context(),
// set by HandleOnce, DedupMiddleware or InTx): they are relayed only if
// that transaction commits. Destination names the real publisher the Relay
// hands them to (RelayConfig.Publishers), e.g. the transport's name.
//
// Publish keeps the messages' UUIDs and metadata; the relay publishes them
// as they were given.
type OutboxPublisher struct {
	destination string
}

var _ message.Publisher = (*OutboxPublisher)(nil)

// NewOutboxPublisher returns a publisher into the outbox for destination.
func NewOutboxPublisher(destination string) (*OutboxPublisher, error) {
	if destination == "" {
		return nil, errors.New("outbox publisher: empty destination; name the publisher the relay should use")
	}
	return &OutboxPublisher{destination: destination}, nil
}

// Publish implements message.Publisher.
func (p *OutboxPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		pt := txFrom(msg.Context())
		if pt == nil {
			return fmt.Errorf("outbox publish %s to %s: %w", msg.UUID, topic, ErrNoTx)
		}
		md := map[string]string(msg.Metadata)
		if md == nil {
			md = map[string]string{}
		}
		_, err := pt.tx.Exec(msg.Context(), `INSERT INTO hexmill_outbox (destination, topic, aggregate_key, message_id, metadata, payload)
			VALUES ($1, $2, $3, $4, $5, $6)`, p.destination, topic, msg.Metadata.Get(MetadataAggregateKey), msg.UUID, md, []byte(msg.Payload))
		if err != nil {
			return fmt.Errorf("outbox publish %s to %s: %w", msg.UUID, topic, err)
		}
		pt.outbox = true // the relay is woken after the commit
	}
	return nil
}

// Close implements message.Publisher; there is nothing to close.
func (p *OutboxPublisher) Close() error { return nil }
