package dlq

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// poisonKeys are dropped from a replayed message: it is no longer
// poisoned. first_poisoned_at stays.
var poisonKeys = []string{middleware.ReasonForPoisonedKey, middleware.PoisonedTopicKey, middleware.PoisonedHandlerKey,
	middleware.PoisonedSubscriberKey, transport.MetadataPoisonedAt, ports.MetadataTopic}

// replayMetadata is l's metadata as it is replayed: without the poison
// keys, with the replay marker.
func replayMetadata(l Letter, now time.Time) map[string]string {
	md := maps.Clone(l.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	for _, k := range poisonKeys {
		delete(md, k)
	}
	if md[transport.MetadataFirstPoisonedAt] == "" && !l.First.IsZero() {
		md[transport.MetadataFirstPoisonedAt] = l.First.UTC().Format(time.RFC3339Nano)
	}
	md[transport.MetadataReplayed] = now.UTC().Format(time.RFC3339Nano)
	return md
}

// sender sends dead letters back to their handlers' bindings.
type sender struct {
	cfg  config.Config
	open func(ctx context.Context, name string) (transport.Transport, error)
	pubs map[string]message.Publisher // by transport name
	ch   *amqp.Channel                // RabbitMQ, in confirm mode
	seen map[string]bool              // RabbitMQ queues found
}

// send republishes l to its binding and returns once the broker
// confirmed it.
func (s *sender) send(ctx context.Context, l Letter) error {
	key, ok := config.BindingKey(s.cfg.Handlers, l.Handler)
	if !ok {
		return fmt.Errorf("dead letter %s: handler %q has no binding in this configuration; replay it with the configuration of the service that poisoned it, or purge it", l.ID, l.Handler)
	}
	b := s.cfg.Handlers[key]
	if b.Transport == config.TransportMemory {
		// Published here, it would reach this process's memory broker
		// only, and be lost with it.
		return fmt.Errorf("dead letter %s: handler %s consumes from memory, inside the service's process, which this command cannot reach; bind it to a broker to replay", l.ID, l.Handler)
	}
	md := replayMetadata(l, time.Now())
	if b.Transport == config.TransportRabbitMQ {
		return s.sendRabbit(ctx, l, b, md)
	}
	pub, ok := s.pubs[b.Transport]
	if !ok {
		t, err := s.open(ctx, b.Transport)
		if err != nil {
			return err
		}
		if pub, err = t.Publisher(nil); err != nil {
			return fmt.Errorf("handlers.%s: %w", key, err)
		}
		s.pubs[b.Transport] = pub
	}
	// The topic it arrived on: a binding's topic may be a filter or a
	// shared subscription, which cannot be published to.
	topic := l.Metadata[ports.MetadataTopic]
	if topic == "" {
		topic = b.Topic
	}
	msg := message.NewMessage(l.MessageID, l.Payload)
	msg.Metadata = md
	msg.SetContext(ctx)
	if err := pub.Publish(topic, msg); err != nil {
		return fmt.Errorf("replay dead letter %s to %s on %s: %w", l.ID, topic, b.Transport, err)
	}
	return nil
}

// sendRabbit publishes l straight to its binding's queue (the default
// exchange routes by queue name), so that only this handler gets it
// again, and waits for the broker's confirm.
func (s *sender) sendRabbit(ctx context.Context, l Letter, b config.Binding, md map[string]string) error {
	queue := b.Topic
	if b.Options["bind_exchange"] != "" && b.Group != "" {
		queue = b.Topic + "." + b.Group
	}
	if s.ch == nil {
		t, err := s.open(ctx, config.TransportRabbitMQ)
		if err != nil {
			return err
		}
		c, ok := t.(channeler)
		if !ok {
			return fmt.Errorf("transport %T cannot open AMQP channels", t)
		}
		if s.ch, err = c.Channel(ctx); err != nil {
			return err
		}
		if err := s.ch.Confirm(false); err != nil {
			return fmt.Errorf("replay: confirm mode: %w", err)
		}
	}
	if !s.seen[queue] {
		if _, err := s.ch.QueueDeclarePassive(queue, true, false, false, false, nil); err != nil {
			return fmt.Errorf("replay dead letter %s: the queue %q of handler %s is not there (start the service once, it declares it): %w", l.ID, queue, l.Handler, err)
		}
		s.seen[queue] = true
	}
	p := amqp.Publishing{MessageId: l.MessageID, Body: l.Payload, DeliveryMode: amqp.Persistent, Headers: amqp.Table{}}
	for k, v := range md {
		switch k {
		case ports.MetadataCorrelationID:
			p.CorrelationId = v
		case ports.MetadataEventType:
			p.Type = v
		case ports.MetadataContentType:
			p.ContentType = v
		default:
			p.Headers[k] = v
		}
	}
	dc, err := s.ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, p)
	if err != nil {
		return fmt.Errorf("replay dead letter %s to queue %s: %w", l.ID, queue, err)
	}
	ok, err := dc.WaitContext(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("replay dead letter %s to queue %s: not confirmed: %w", l.ID, queue, err)
	case !ok:
		return fmt.Errorf("replay dead letter %s to queue %s: the broker refused it (nack)", l.ID, queue)
	}
	return nil
}

// Close closes what send opened; the transports are the caller's.
func (s *sender) Close() error {
	for _, p := range s.pubs {
		_ = p.Close()
	}
	if s.ch != nil {
		return s.ch.Close()
	}
	return nil
}
