package aliyun

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// The universal suite, against the signature-checking broker. Aliyun's
// model: a consumer group is one queue that holds every topic, each
// message carrying its topic as an application property. The suite's
// topics are unique per test, so the harness gives each topic its own
// queue (its "consumer group") and, per topic, a Transport whose
// subscriber filters on that topic; the test publisher sends through
// AMQP 1.0 the way Aliyun pushes.
//
// Features, truthfully: order is not guaranteed (Aliyun does not, and
// messages are handed to handlers concurrently); consumer groups in the
// suite's sense (a group chosen per subscription) are not supported: the
// group is fixed by configuration (consumer_group_id), one per Transport;
// persistent (the broker keeps what no one consumes yet); several
// instances compete for one group's messages, so RequireSingleInstance is
// false. No RestartServiceCommand: the shared broker must not be restarted;
// TestProxyCutUnderLoad covers reconnects.
func TestPubSub(t *testing.T) {
	addr := signingBroker(t)
	p := newPusher(t, addr)
	var queuesMu sync.Mutex
	queues := map[string]bool{}
	t.Cleanup(func() { deleteQueues(t, addr, queues) })
	queueOf := func(topic string) string {
		q := "hexmill-aliyun-suite-" + strings.NewReplacer("/", "_", "+", "_", "#", "_").Replace(topic)
		queuesMu.Lock()
		queues[q] = true
		queuesMu.Unlock()
		return q
	}
	ctor := func(t *testing.T) (message.Publisher, message.Subscriber) {
		return &suitePublisher{p: p, queueOf: queueOf}, &suiteSubscriber{t: t, addr: addr, queueOf: queueOf, consumers: map[string]*suiteConsumer{}}
	}
	tests.TestPubSub(t,
		tests.Features{
			ConsumerGroups:        false,
			ExactlyOnceDelivery:   false,
			GuaranteedOrder:       false,
			Persistent:            true,
			RequireSingleInstance: false,
		},
		ctor,
		func(t *testing.T, group string) (message.Publisher, message.Subscriber) { return ctor(t) },
	)
}

// suitePublisher is the test-only publisher: a go-amqp sender, as Aliyun
// pushes (Aliyun has no publisher side on this transport).
type suitePublisher struct {
	p       *pusher
	queueOf func(string) string
}

func (s *suitePublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if err := s.p.push(s.queueOf(topic), topic, m.UUID, m.Payload, m.Metadata); err != nil {
			return err
		}
	}
	return nil
}

func (s *suitePublisher) Close() error { return nil } // the pusher is the test's

// suiteSubscriber subscribes each topic through a Transport reading that
// topic's queue.
type suiteSubscriber struct {
	t       *testing.T
	addr    string
	queueOf func(string) string

	mu        sync.Mutex
	closed    bool
	consumers map[string]*suiteConsumer
}

type suiteConsumer struct {
	c   *Transport
	sub message.Subscriber
}

func (s *suiteSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	sc, ok := s.consumers[topic]
	if !ok {
		cfg := testConfig(s.t, s.addr, s.queueOf(topic))
		c, err := New(cfg, watermill.NopLogger{})
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		sub, err := c.Subscriber(SubscriberConfig{Handler: "suite", Concurrency: 16})
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		sc = &suiteConsumer{c: c, sub: sub}
		s.consumers[topic] = sc
	}
	s.mu.Unlock()
	return sc.sub.Subscribe(ctx, topic)
}

func (s *suiteSubscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	consumers := s.consumers
	s.consumers = map[string]*suiteConsumer{}
	s.mu.Unlock()
	var errs []error
	for _, sc := range consumers {
		errs = append(errs, sc.sub.Close(), sc.c.Close())
	}
	return errors.Join(errs...)
}

// deleteQueues removes the suite's queues from the private node.
func deleteQueues(t testing.TB, addr string, queues map[string]bool) {
	conn, err := amqp091.Dial("amqp://guest:guest@" + addr + "/")
	if err != nil {
		t.Logf("delete queues: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	for q := range queues {
		_, _ = ch.QueueDelete(q, false, false, false)
	}
}
