package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/transport"
)

// SubscriberOptions are the handler binding options a subscriber accepts.
var SubscriberOptions = []string{"consumers", "bind_exchange", "routing_key"}

// SubscriberConfig configures one subscriber. Concurrency is the
// prefetch: how many messages may be delivered and unsettled at once, over
// all the subscription's consumers. Group is used with the bind_exchange
// option only. Options:
//   - "consumers": the number of AMQP consumers, each on its own channel,
//     per subscription (1 to 64, default 1); the prefetch is split evenly.
//   - "bind_exchange": makes the subscription declare its queue (from the
//     Config's subscriber_queue template) and bind it to this exchange
//     with "routing_key" (default: the topic). With a Group, the queue is
//     named "<topic>.<group>", so each group gets its own copy and the
//     replicas of a group share it. Without bind_exchange, the topic is the
//     name of a queue from the topology: competing consumers of one queue
//     are the group.
type SubscriberConfig = transport.SubscriberConfig

// subscriberSettings is a SubscriberConfig read.
type subscriberSettings struct {
	name, group              string
	prefetch, consumers      int
	bindExchange, routingKey string
}

// settingsOf reads a subscriber's configuration; unknown options are an
// error.
func settingsOf(sc SubscriberConfig) (subscriberSettings, error) {
	st := subscriberSettings{name: sc.Handler, group: sc.Group, prefetch: max(sc.Concurrency, 1), consumers: 1}
	for _, k := range sortedKeys(sc.Options) {
		v := sc.Options[k]
		switch k {
		case "consumers":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 64 {
				return st, errors.New("options.consumers: must be a whole number from 1 to 64")
			}
			st.consumers = n
		case "bind_exchange":
			st.bindExchange = v
		case "routing_key":
			st.routingKey = v
		default:
			return st, fmt.Errorf("options.%s: unknown RabbitMQ subscribe option; use %s", k, strings.Join(SubscriberOptions, ", "))
		}
	}
	if st.routingKey != "" && st.bindExchange == "" {
		return st, errors.New("options.routing_key: needs options.bind_exchange")
	}
	return st, nil
}

// Subscriber consumes queues. See the package documentation for its stop
// protocol.
type Subscriber struct {
	client *Transport
	cfg    subscriberSettings

	closing   chan struct{}
	closeOnce sync.Once
	subs      transport.Subscriptions[amqp.Delivery] // one Handout per Subscribe
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

var consumerSeq atomic.Uint64

// Subscriber returns a subscriber (a *Subscriber) on the transport's
// connection.
func (c *Transport) Subscriber(sc SubscriberConfig) (message.Subscriber, error) {
	st, err := settingsOf(sc)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	return &Subscriber{client: c, cfg: st, closing: make(chan struct{})}, nil
}

func (s *Subscriber) queueName(topic string) string {
	if s.cfg.bindExchange != "" && s.cfg.group != "" {
		return topic + "." + s.cfg.group
	}
	return topic
}

// SubscribeInitialize declares and binds the topic's queue when the
// subscriber has a BindExchange; otherwise it does nothing.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	if s.cfg.bindExchange == "" {
		return nil
	}
	conn, err := s.client.connection(context.Background(), 0)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	defer func() { _ = ch.Close() }()
	return s.declare(ch, topic)
}

func (s *Subscriber) declare(ch *amqp.Channel, topic string) error {
	q := s.client.cfg.SubscriberQueue
	q.Name = s.queueName(topic)
	if err := declareQueue(ch, q); err != nil {
		return err
	}
	key := s.cfg.routingKey
	if key == "" {
		key = topic
	}
	if err := ch.QueueBind(q.Name, key, s.cfg.bindExchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %q to exchange %q: %w", q.Name, s.cfg.bindExchange, err)
	}
	return nil
}

// Subscribe implements message.Subscriber: it returns once every consumer
// of the subscription is consuming. Cancelling ctx stops intake
// (basic.cancel) and closes the channel; delivered messages can still be
// acked or nacked until Close. A nack requeues the message.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	select {
	case <-s.closing:
		return nil, ErrClosed
	default:
	}
	subCtx, cancel := context.WithCancel(ctx)
	h := transport.NewHandout(subCtx, s.cfg.prefetch, s.settle)
	if !s.subs.Add(h) {
		cancel()
		return nil, ErrClosed
	}
	started := make(chan error, s.cfg.consumers)
	var consumers sync.WaitGroup
	prefetch := max(1, (s.cfg.prefetch+s.cfg.consumers-1)/s.cfg.consumers)
	for range s.cfg.consumers {
		k := &consumer{
			s: s, h: h, topic: topic, queue: s.queueName(topic), prefetch: prefetch,
			tag: strings.TrimPrefix(fmt.Sprintf("%s.%s.%d", s.client.cfg.ConnectionName, s.cfg.name, consumerSeq.Add(1)), "."),
		}
		consumers.Add(1)
		if !h.Go(func() {
			defer consumers.Done()
			k.run(subCtx, started)
		}) {
			consumers.Done()
			started <- ErrClosed
		}
	}
	h.Go(func() {
		consumers.Wait()
		cancel()
	})
	var errs []error
	for range s.cfg.consumers {
		if err := <-started; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		cancel()
		return nil, errors.Join(errs...)
	}
	return h.Output(), nil
}

// Close stops every subscription, requeues every unsettled message (nack
// with requeue), closes the channels and waits for the subscriber's
// goroutines. It is safe to call more than once.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	s.subs.Close()
	return nil
}

func (s *Subscriber) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// settle acks d, or nacks it with requeue. A settle that cannot reach the
// broker (the channel is gone, as after a reconnect) is dropped: the
// broker requeues what a closed channel left unsettled.
func (s *Subscriber) settle(d amqp.Delivery, acked bool) {
	var err error
	if acked {
		err = d.Ack(false)
	} else {
		err = d.Nack(false, true)
	}
	if err != nil {
		s.client.logger.Debug("RabbitMQ settle did not reach the broker; it will redeliver", watermill.LogFields{"consumer": d.ConsumerTag, "uuid": d.MessageId, "err": err.Error()})
	}
}

// consumer is one AMQP consumer of a subscription; it re-subscribes after
// a reconnect.
type consumer struct {
	s        *Subscriber
	h        *transport.Handout[amqp.Delivery] // the subscription's, shared by its consumers
	topic    string
	queue    string
	tag      string
	prefetch int
}

type stopReason int

const (
	channelLost stopReason = iota
	intakeStopped
	subscriberClosed
)

func (k *consumer) run(ctx context.Context, started chan<- error) {
	client := k.s.client
	defer client.unregister(k)
	client.setConsuming(k, false)
	b := newBackoff(client.cfg.Reconnect)
	first := true
	var reuse *amqp.Channel // the channel of a consumer the broker cancelled
	var cancels <-chan string
	for {
		ch, deliveries, err := k.start(ctx, reuse)
		if reuse == nil && err == nil {
			// On a new channel: the broker's basic.cancel comes here.
			cancels = ch.NotifyCancel(make(chan string, 1))
		}
		reuse = nil
		if err == nil {
			// Before Subscribe returns: it promises every consumer is
			// consuming, and Ready says so from this mark.
			client.setConsuming(k, true)
		}
		if first {
			first = false
			started <- err
			if err != nil {
				return
			}
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				k.h.WaitSettled()
				return
			}
			client.logger.Error("RabbitMQ consume failed; retrying", err, watermill.LogFields{"queue": k.queue, "node": client.Node()})
			if !b.wait(k.s.closing, ctx.Done()) {
				k.h.WaitSettled()
				return
			}
			continue
		}
		b.reset()
		reason := k.pump(deliveries)
		client.setConsuming(k, false)
		switch reason {
		case channelLost:
			select {
			case <-cancels:
				// basic.cancel from the broker: the queue was deleted, or
				// its leader moved. The channel is open: consume again on
				// it, so that the messages handed out stay settleable.
				client.logger.Info("RabbitMQ cancelled the consumer (its queue was deleted or moved to another node); resubscribing",
					watermill.LogFields{"queue": k.queue, "consumer": k.tag, "node": client.Node()})
				if !ch.IsClosed() {
					reuse = ch
					continue
				}
			default:
				client.logger.Info("RabbitMQ consumer lost its channel; resubscribing", watermill.LogFields{"queue": k.queue})
			}
			_ = client.bounded(ch.Close)
			continue
		case intakeStopped:
			// basic.cancel; what the client buffered but never handed out
			// goes back at once. On a blocked connection the broker does
			// not answer: bounded closes the socket, which ends the
			// deliveries, and the broker requeues what is unsettled.
			_ = client.bounded(func() error { return ch.Cancel(k.tag, false) })
			for d := range deliveries {
				_ = d.Nack(false, true)
			}
		}
		k.h.WaitSettled() // handlers settle, or Close requeues
		_ = client.bounded(ch.Close)
		return
	}
}

// start consumes on ch, or on a new channel when ch is nil, waiting for
// the connection.
func (k *consumer) start(ctx context.Context, ch *amqp.Channel) (*amqp.Channel, <-chan amqp.Delivery, error) {
	if ch == nil {
		conn, err := k.s.client.connection(ctx, -1)
		if err != nil {
			return nil, nil, err
		}
		if ch, err = conn.Channel(); err != nil {
			return nil, nil, fmt.Errorf("open channel: %w", err)
		}
		if err := ch.Qos(k.prefetch, 0, false); err != nil {
			_ = ch.Close()
			return nil, nil, fmt.Errorf("qos: %w", err)
		}
	}
	if k.s.cfg.bindExchange != "" {
		if err := k.s.declare(ch, k.topic); err != nil {
			_ = ch.Close()
			return nil, nil, err
		}
	}
	deliveries, err := ch.Consume(k.queue, k.tag, false, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			return nil, nil, fmt.Errorf("consume queue %q: it does not exist; declare it under transports.rabbitmq.queues or set the bind_exchange option", k.queue)
		}
		return nil, nil, fmt.Errorf("consume queue %q: %w", k.queue, err)
	}
	return ch, deliveries, nil
}

// pump hands deliveries out until intake stops (at Close too) or the
// channel is lost.
func (k *consumer) pump(deliveries <-chan amqp.Delivery) stopReason {
	for k.h.Acquire() {
		var d amqp.Delivery
		select {
		case delivery, ok := <-deliveries:
			if !ok {
				k.h.Release()
				return channelLost
			}
			d = delivery
		case <-k.h.Stopped():
			k.h.Release()
			return k.stopped()
		}
		if !k.h.Send(unmarshal(&d), d) {
			_ = d.Nack(false, true)
			return k.stopped()
		}
	}
	return k.stopped()
}

// stopped tells why intake stopped.
func (k *consumer) stopped() stopReason {
	if k.s.isClosing() {
		return subscriberClosed
	}
	return intakeStopped
}
