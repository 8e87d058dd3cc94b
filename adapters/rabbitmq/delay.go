package rabbitmq

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

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

// headerParkedTopic carries a parked message's routing key through its
// delay queue: the message comes back through the default exchange, whose
// routing key is the source queue's name, and unmarshal gives it its
// topic back from here (parkedTopic).
const headerParkedTopic = "hexmill-parked-topic"

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
	// The routing key travels in a header and is the topic again on
	// delivery (parkedTopic), so that topic_params match as they did the
	// first time.
	delete(out.Metadata, ports.MetadataTopic)
	if t := msg.Metadata.Get(ports.MetadataTopic); t != "" {
		out.Metadata[headerParkedTopic] = t
	}
	out.SetContext(ctx)
	if err := p.Publish(DelayQueueName(source, delay), out); err != nil {
		return fmt.Errorf("park in %s: %w", DelayQueueName(source, delay), err)
	}
	return nil
}

// parkedTopic is the routing key a message had before it was parked, when
// d comes back from a delay queue of its own queue: through the default
// exchange with the queue as its routing key, and dead-lettered by the
// broker (the first x-death entry, the latest, says it expired in
// "<queue>.delay.<d>"). Any other delivery keeps the routing key it has:
// the header alone is a sender's word. What remains is a publisher that
// may write to the default exchange (amq.default) and forges x-death too,
// which can put any message in any queue anyway: deny devices that
// permission (docs/security.md).
func parkedTopic(d *amqp.Delivery) (string, bool) {
	t, ok := d.Headers[headerParkedTopic].(string)
	if !ok || t == "" || d.Exchange != "" || d.RoutingKey == "" {
		return "", false
	}
	deaths, ok := d.Headers["x-death"].([]any)
	if !ok || len(deaths) == 0 {
		return "", false
	}
	latest, ok := deaths[0].(amqp.Table)
	if !ok {
		return "", false
	}
	queue, _ := latest["queue"].(string)
	reason, _ := latest["reason"].(string)
	if reason != "expired" || !strings.HasPrefix(queue, d.RoutingKey+".delay.") {
		return "", false
	}
	return t, true
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
