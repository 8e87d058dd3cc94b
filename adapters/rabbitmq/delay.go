package rabbitmq

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

var _ transport.Delayer = (*Transport)(nil)

// delays is what the transport's delayed retries use: one publisher to
// the default exchange (confirmed, persistent, mandatory), made at the
// first DeclareDelays and closed by Close.
type delays struct {
	mu  sync.Mutex
	pub *Publisher
}

// DelayQueueName is the queue that parks the messages of queue source for
// d: "<source>.delay.<d>", e.g. orders.delay.30s.
func DelayQueueName(source string, d time.Duration) string {
	return source + ".delay." + d.String()
}

// sourceQueue is the queue a subscriber of sc consumes for topic.
func sourceQueue(sc SubscriberConfig, topic string) (string, error) {
	st, err := settingsOf(sc)
	if err != nil {
		return "", fmt.Errorf("rabbitmq: %w", err)
	}
	s := Subscriber{cfg: st}
	return s.queueName(topic), nil
}

// DeclareDelays declares a delay queue per delay (DelayQueueName), whose
// messages expire after the delay and are dead-lettered through the
// default exchange back to the source queue (transport.Delayer).
func (c *Transport) DeclareDelays(ctx context.Context, sc SubscriberConfig, topic string, ds []time.Duration) error {
	source, err := sourceQueue(sc, topic)
	if err != nil {
		return err
	}
	c.delays.mu.Lock()
	defer c.delays.mu.Unlock()
	if c.delays.pub == nil {
		yes := true
		p, err := c.NewPublisher(PublishConfig{Persistent: &yes, Mandatory: &yes, Confirm: &yes, OutageWait: c.cfg.Publish.OutageWait})
		if err != nil {
			return err
		}
		c.delays.pub = p
	}
	conn, err := c.connection(ctx, c.cfg.DialTimeout)
	if err != nil {
		return fmt.Errorf("declare delay queues of %q: %w", source, err)
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("declare delay queues of %q: channel: %w", source, err)
	}
	defer func() { _ = ch.Close() }()
	for _, d := range ds {
		if err := declareDelayQueue(ch, DelayQueueName(source, d), source, d); err != nil {
			return err
		}
	}
	return nil
}

// Delay publishes msg to the delay queue of its source queue for delay,
// and returns once the broker confirmed it (transport.Delayer).
func (c *Transport) Delay(ctx context.Context, sc SubscriberConfig, topic string, delay time.Duration, msg *message.Message) error {
	source, err := sourceQueue(sc, topic)
	if err != nil {
		return err
	}
	c.delays.mu.Lock()
	p := c.delays.pub
	c.delays.mu.Unlock()
	if p == nil {
		return fmt.Errorf("rabbitmq: delay for %s was not declared (DeclareDelays)", delay)
	}
	out := message.NewMessage(msg.UUID, msg.Payload)
	out.Metadata = maps.Clone(msg.Metadata)
	delete(out.Metadata, ports.MetadataTopic) // the routing key, set again on delivery
	out.SetContext(ctx)
	if err := p.Publish(DelayQueueName(source, delay), out); err != nil {
		return fmt.Errorf("park in %s: %w", DelayQueueName(source, delay), err)
	}
	return nil
}

// closeDelays closes the delays' publisher.
func (c *Transport) closeDelays() {
	c.delays.mu.Lock()
	p := c.delays.pub
	c.delays.pub = nil
	c.delays.mu.Unlock()
	if p != nil {
		_ = p.Close()
	}
}
