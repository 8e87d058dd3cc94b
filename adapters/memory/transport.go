// Package memory is the in-process transport: a broker with queues, consumer
// groups, acknowledgements and redelivery, so the service runs and is
// tested with no broker at all. It keeps nothing across process restarts.
package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

// Config configures the in-memory transport.
type Config struct {
	// QueueLimit bounds each queue; a publish to a full queue fails (the
	// caller retries) rather than growing memory without bound.
	QueueLimit int `yaml:"queue_limit"`
	// MaxQueueBytes bounds each queue in bytes (payloads and metadata) as
	// QueueLimit does in messages; 0 sets no such bound. A message is
	// always taken by an empty queue, so one larger than the bound does
	// not block its topic for good.
	MaxQueueBytes int64 `yaml:"max_queue_bytes"`
	// MaxMessageBytes is the largest message a subscriber hands out
	// (bindings may lower or raise it: handlers.<name>.max_message_bytes);
	// a larger one is poisoned with reason too_large. 0 means
	// transport.DefaultMaxMessageBytes (1 MiB).
	MaxMessageBytes int `yaml:"max_message_bytes"`
}

// DefaultQueueLimit is Config.QueueLimit's default.
const DefaultQueueLimit = 100_000

// DefaultMaxQueueBytes is the service's default of Config.MaxQueueBytes
// (the app's section sets it; a Config made in code has none).
const DefaultMaxQueueBytes = 64 << 20

// SetDefaults fills the zero values with defaults. It is idempotent.
func (c *Config) SetDefaults() {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = transport.DefaultMaxMessageBytes
	}
	if c.QueueLimit == 0 {
		c.QueueLimit = DefaultQueueLimit
	}
}

// Validate reports the first invalid field, named as in YAML, with the fix.
func (c Config) Validate() error {
	if err := transport.CheckMaxMessageBytes("max_message_bytes", c.MaxMessageBytes); err != nil {
		return err
	}
	if c.QueueLimit < 1 {
		return &ports.FieldError{Field: "queue_limit", Fix: "must be 1 or more, e.g. 100000"}
	}
	if c.MaxQueueBytes < 0 {
		return &ports.FieldError{Field: "max_queue_bytes", Fix: "must be 0 (no bound) or more, e.g. 67108864"}
	}
	return nil
}

// ErrClosed is returned by a closed publisher or subscriber.
var ErrClosed = errors.New("memory: closed")

// ErrQueueFull is returned when a publish would go past Config.QueueLimit.
var ErrQueueFull = errors.New("memory: queue full")

// Transport is the in-memory broker: it routes messages from publishers
// to the queues of subscribers.
//
// Each (topic, group) pair has one queue, created by the first subscription
// and kept for the broker's life, like a durable queue: its subscribers
// compete for its messages. A publish goes to every queue of its
// topic; published before any queue exists, messages wait for the first
// one. A nacked message, or one unsettled when its subscriber closes, goes
// back to the front of its queue.
//
// The Transport is its own publisher (Publish), for tests and demos to
// publish to directly.
type Transport struct {
	cfg    Config
	logger watermill.LoggerAdapter

	mu     sync.Mutex
	topics map[string]*topic
}

type topic struct {
	queues       map[string]*queue // by group
	waiting      []*message.Message
	waitingBytes int64
}

type queue struct {
	name     string
	messages []*message.Message
	bytes    int64 // the size of messages, see size
	// changed is closed and replaced whenever a message is added.
	changed chan struct{}
}

// New validates cfg and returns an empty broker.
func New(cfg Config, logger watermill.LoggerAdapter) (*Transport, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Transport{cfg: cfg, logger: logger, topics: map[string]*topic{}}, nil
}

// Open does nothing: there is nothing to connect to.
func (b *Transport) Open(context.Context) error { return nil }

// Publisher returns the transport itself, for an event binding; the
// memory transport takes no binding options.
func (b *Transport) Publisher(options map[string]string) (message.Publisher, error) {
	if err := b.cfg.CheckBindingOptions(false, options); err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	return b, nil
}

// Ready returns nil: the broker is always there.
func (b *Transport) Ready() error { return nil }

// Publish implements message.Publisher. It returns once every message is
// in every queue of its topic.
func (b *Transport) Publish(topicName string, msgs ...*message.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topic(topicName)
	for _, msg := range msgs {
		c := onTopic(msg, topicName)
		n := size(c)
		if len(t.queues) == 0 {
			if len(t.waiting) >= b.cfg.QueueLimit || b.overBytes(len(t.waiting), t.waitingBytes, n) {
				return fmt.Errorf("%w: topic %s has no subscriber and %d messages (%d bytes) waiting", ErrQueueFull, topicName, len(t.waiting), t.waitingBytes)
			}
			t.waiting = append(t.waiting, c)
			t.waitingBytes += n
			continue
		}
		for _, q := range t.queues {
			if len(q.messages) >= b.cfg.QueueLimit || b.overBytes(len(q.messages), q.bytes, n) {
				return fmt.Errorf("%w: queue %s holds %d messages (%d bytes)", ErrQueueFull, q.name, len(q.messages), q.bytes)
			}
		}
		first := true
		for _, q := range t.queues {
			if !first {
				c = c.Copy()
			}
			first = false
			q.push(c)
		}
	}
	return nil
}

// onTopic is the copy of msg a queue of topicName holds. The queue's topic
// is its topic (ports.MetadataTopic), whatever the publisher's metadata
// says, and redelivered is never the publisher's to set (see
// transport.FrameworkKey); the rest of the metadata is in-process, written
// by the runtime and the ops inject.
func onTopic(msg *message.Message, topicName string) *message.Message {
	c := msg.Copy()
	c.Metadata[ports.MetadataTopic] = topicName
	delete(c.Metadata, ports.MetadataRedelivered)
	return c
}

// overBytes reports whether a message of n bytes would take a queue of
// count messages and held bytes past MaxQueueBytes; an empty queue takes
// any message.
func (b *Transport) overBytes(count int, held, n int64) bool {
	return b.cfg.MaxQueueBytes > 0 && count > 0 && held+n > b.cfg.MaxQueueBytes
}

// size is what a message counts against MaxQueueBytes: its payload and
// its metadata's keys and values, but the topic, which its queue sets
// (see onTopic).
func size(msg *message.Message) int64 {
	n := len(msg.Payload)
	for k, v := range msg.Metadata {
		if k != ports.MetadataTopic {
			n += len(k) + len(v)
		}
	}
	return int64(n)
}

// Depth returns how many messages wait in the queue of topic and group
// (delivered, unsettled messages are not counted).
func (b *Transport) Depth(topicName, group string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topic(topicName)
	if q, ok := t.queues[group]; ok {
		return len(q.messages)
	}
	return len(t.waiting)
}

func (b *Transport) topic(name string) *topic {
	t, ok := b.topics[name]
	if !ok {
		t = &topic{queues: map[string]*queue{}}
		b.topics[name] = t
	}
	return t
}

// queue returns the queue of topic and group, creating it; the first queue
// of a topic takes the messages that waited for one. b.mu must be held.
func (b *Transport) queue(topicName, group string) *queue {
	t := b.topic(topicName)
	q, ok := t.queues[group]
	if !ok {
		q = &queue{name: topicName + "/" + group, changed: make(chan struct{})}
		if len(t.queues) == 0 {
			q.messages, q.bytes, t.waiting, t.waitingBytes = t.waiting, t.waitingBytes, nil, 0
		}
		t.queues[group] = q
	}
	return q
}

// take removes the first message of q, or returns the channel to wait on.
func (b *Transport) take(q *queue) (*message.Message, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(q.messages) == 0 {
		return nil, q.changed
	}
	msg := q.messages[0]
	q.messages[0] = nil
	q.messages = q.messages[1:]
	q.bytes -= size(msg)
	return msg, nil
}

// requeue puts msg back at the front of q.
func (b *Transport) requeue(q *queue, msg *message.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q.messages = append([]*message.Message{msg}, q.messages...)
	q.bytes += size(msg)
	q.notify()
}

func (q *queue) push(msg *message.Message) {
	q.messages = append(q.messages, msg)
	q.bytes += size(msg)
	q.notify()
}

func (q *queue) notify() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// Close implements message.Publisher, and closes the transport: there is
// nothing to release, the queues stay as they are.
func (b *Transport) Close() error { return nil }

var _ message.Publisher = (*Transport)(nil)

// CheckBindingOptions validates a binding's options: the in-memory
// transport takes none.
func (c Config) CheckBindingOptions(_ bool, options map[string]string) error {
	for k := range options {
		return fmt.Errorf("options.%s: the memory transport takes no binding options", k)
	}
	return nil
}

// The contract with the runtime (adapters/transport).
var (
	_ transport.Transport      = (*Transport)(nil)
	_ transport.Defaulter      = (*Config)(nil)
	_ transport.Validator      = Config{}
	_ transport.OptionsChecker = Config{}
)
