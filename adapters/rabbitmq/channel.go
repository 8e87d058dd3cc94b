package rabbitmq

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Channel opens a channel on the transport's connection, waiting for it
// while ctx lasts, for tools that work a queue directly (the dlq command
// reads the poison queue with basic.get). The caller closes it.
func (c *Transport) Channel(ctx context.Context) (*amqp.Channel, error) {
	conn, err := c.connection(ctx, -1)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: open channel: %w", err)
	}
	return ch, nil
}
