package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// Middleware wraps every handler's processing of a message (the service's
// middlewares, app.AsMiddleware). It is the "service" link of the chain
// (see links): it runs once per attempt (a retried message passes it
// again), inside the retry and the panic recovery, before the handler
// and its wire-format translation. On an idempotent binding it runs
// inside the transaction: only for a message not handled before, with the
// transaction in msg.Context() (what it writes commits or rolls back with
// the handler's changes). handler is the handler's name. An error it
// returns is the handler's: retried, then poisoned; ports.Invalid poisons
// at once.
type Middleware func(handler string, next message.HandlerFunc) message.HandlerFunc

// Format translates a wire format at the edge: it rewrites the payload (and
// may add metadata) before the handler sees the message. An error wrapped
// with ports.Invalid sends the message to the poison target. A binding
// names it in format.
type Format func(msg *message.Message) error

// NamedFormat is a Format with the name bindings use for it.
type NamedFormat struct {
	Name   string
	Format Format
}

// link is one middleware of a handler's chain, named so that a test can
// assert the order.
type link struct {
	name string
	wrap message.HandlerMiddleware // nil: not part of this binding's chain
}

// chainParams are what a handler's chain is made of.
type chainParams struct {
	handler     string
	binding     config.Binding
	tracing     *tracing        // nil: tracing off
	metrics     *handlerMetrics // nil: no registry
	inflight    *inflight
	abort       context.Context // ends when stop gives up on the drain
	logger      *slog.Logger
	retry       config.RetryConfig
	publishers  *eventPublisher // the poison target's
	db          *postgres.DB    // nil: PostgreSQL off
	middlewares []Middleware
	maxBytes    int        // the binding's max_message_bytes, resolved
	handbacks   *handbacks // the handler's hand-back counts
	parker      *parker    // nil: no delayed retries
}

// links is a handler's chain, outermost first; the order is written here
// only, and TestChainOrder asserts it. The links, and what each is for:
//
//   - delivery: the message's state for the links inside (its handler's
//     name, what the poison link did), made once per message;
//   - content_id: the message's ID from its topic and payload (binding
//     message_id: content), before anything logs or records the ID;
//   - delivery_span: the consumer span, continuing the sender's trace;
//   - failure_log: logs a message handed back to its broker;
//   - metrics: times the rest and counts acked, nacked, poisoned and
//     handed back messages, which the links inside decide;
//   - inflight: counts the message until it is settled, and settles it
//     (ack on nil, else nack): stop waits for it;
//   - handler_span: the span of the handler's attempts;
//   - poison: sends a message that failed for good to the poison target
//     and lets it be acked; outside the transaction, so that a poisoned
//     message is published directly, after the rollback; with delayed
//     retries, parks a message that failed after the in-process retries
//     instead, until its last delay (delayed.go);
//   - retry: runs a failing handler again, with backoff;
//   - dedup: on an idempotent binding, each attempt in its own
//     transaction, which a duplicate ends before anything below runs;
//   - recoverer: a panic is an error, inside the transaction, so that it
//     rolls back;
//   - service: the service's middlewares, in the order provided (on an
//     idempotent binding in the transaction, for first deliveries only).
//
// The handler itself (handlerFunc, with the wire-format translation) is
// innermost.
func links(p chainParams) []link {
	b := p.binding
	var contentLink, dedupLink message.HandlerMiddleware
	if b.MessageID == config.MessageIDContent {
		contentLink = contentID(b.Topic)
	}
	if b.Idempotent {
		dedupLink = postgres.DedupMiddleware(p.db, p.handler)
	}
	chain := []link{
		{"delivery", newDelivery(p.handler)},
		{"content_id", contentLink},
		{"delivery_span", p.tracing.consumer(b)},
		{"failure_log", logFailure(p.handler, p.abort, p.logger)},
		{"metrics", p.metrics.middleware(p.handler, b.Transport)},
		{"inflight", p.inflight.middleware},
		{"handler_span", p.tracing.handler(p.handler)},
		{"poison", poisoner{handler: p.handler, binding: b, abort: p.abort, database: p.db != nil, publishers: p.publishers, logger: p.logger,
			maxBytes: p.maxBytes, maxHandbacks: b.MaxHandbacks, handbacks: p.handbacks, retry: p.retry, delayed: p.parker}.middleware},
		{"retry", retry{handler: p.handler, cfg: p.retry, abort: p.abort, logger: p.logger, timeout: b.HandlerTimeout}.middleware},
		{"dedup", dedupLink},
		{"recoverer", middleware.Recoverer},
	}
	for _, m := range p.middlewares {
		chain = append(chain, link{"service", func(next message.HandlerFunc) message.HandlerFunc { return m(p.handler, next) }})
	}
	return chain
}

// build wraps h in the chain's links, the first outermost.
func build(chain []link, h message.HandlerFunc) message.HandlerFunc {
	for i := len(chain) - 1; i >= 0; i-- {
		if chain[i].wrap != nil {
			h = chain[i].wrap(h)
		}
	}
	return h
}

// logFailure logs a message handed back to its broker, except when stop
// cut its handler short (abort ended).
func logFailure(name string, abort context.Context, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			produced, err := h(msg)
			if err != nil && abort.Err() == nil {
				logger.ErrorContext(msg.Context(), "handler failed; the message goes back to its broker", "handler", name, "message_id", msg.UUID,
					"err", transport.Truncate(err.Error(), transport.MetadataValueBytes))
			}
			return produced, err
		}
	}
}

// handlerFunc turns a ports.Handler into a watermill handler, the chain's
// innermost: it applies the binding's wire format and fills Metadata and
// the correlation ID. With topic_params, a message whose topic does not
// match them is ports.Invalid (poisoned, not retried).
func handlerFunc(h ports.Handler, b config.Binding, format Format, params *config.TopicParams) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		in := msg
		if format != nil {
			in = msg.Copy() // the poison target gets the message as it came
			if err := format(in); err != nil {
				return nil, err
			}
		}
		topic := in.Metadata.Get(ports.MetadataTopic)
		if topic == "" {
			topic = b.Topic
		}
		correlationID := in.Metadata.Get(ports.MetadataCorrelationID)
		if correlationID == "" {
			correlationID = msg.UUID
		}
		for k, v := range in.Metadata {
			if err := checkUTF8(k, v); err != nil {
				return nil, ports.Invalid(err)
			}
		}
		// The handler reads the message's metadata itself as its
		// Attributes, which ports.Metadata declares read only: no copy
		// per message. The runtime writes no metadata of a message once
		// its handler has it (the poison and delay keys go into a copy,
		// see detachMetadata), so that a handler that keeps the map
		// never races with the runtime.
		attrs := map[string]string(in.Metadata)
		// The topic's segments win over metadata of the same name, which
		// its sender chose; a topic that does not match leaves the
		// sender's names in place, so its message is never handled.
		if params != nil {
			segments := params.Match(topic)
			if segments == nil {
				return nil, ports.Invalid(fmt.Errorf("topic %q does not match the binding's topic_params %q: its attributes cannot be taken from the topic", topic, b.TopicParams))
			}
			if in == msg { // the segments go into a copy: the poison target gets the message as it came
				attrs = make(map[string]string, len(in.Metadata)+len(segments))
				maps.Copy(attrs, in.Metadata)
			}
			maps.Copy(attrs, segments)
		}
		// The message's context ends when its subscriber closes, which the
		// stop protocol does once the drain timeout expired. It carries the
		// correlation ID in its delivery (set once: every attempt finds
		// the same), else in a layer of its own.
		ctx := msg.Context()
		switch d := deliveryOf(ctx); {
		case d != nil && d.correlationID == "":
			d.correlationID = correlationID
		case d == nil || d.correlationID != correlationID:
			ctx = ports.WithCorrelationID(ctx, correlationID)
		}
		return nil, h.Handle(ctx, ports.Message{
			Metadata: ports.Metadata{
				ID: msg.UUID, CorrelationID: correlationID, Topic: topic,
				ReceivedAt: time.Now(), Attributes: attrs,
			},
			Payload: in.Payload,
		})
	}
}

// checkUTF8 refuses a metadata entry that is not valid UTF-8, so that it
// never reaches a handler, a log line or an MQTT publish (where the broker
// would close the connection). The correlation ID is exempt: MQTT carries
// it as binary correlation data.
func checkUTF8(k, v string) error {
	switch {
	case k == ports.MetadataCorrelationID:
	case !utf8.ValidString(k):
		return fmt.Errorf("metadata key %q is not valid UTF-8: the sender must send UTF-8 header and property names", k)
	case !utf8.ValidString(v):
		return fmt.Errorf("metadata %q: the value %q is not valid UTF-8: the sender must send UTF-8 header and property values", k, v)
	}
	return nil
}

// contentID gives each message the hash of its topic and payload as its
// ID (config.Binding.MessageID content): a redelivery of a message its sender
// gave no ID then has the ID of its first delivery.
func contentID(bindingTopic string) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			topic := msg.Metadata.Get(ports.MetadataTopic)
			if topic == "" {
				topic = bindingTopic
			}
			sum := sha256.New()
			sum.Write([]byte(topic))
			sum.Write([]byte{0})
			sum.Write(msg.Payload)
			msg.UUID = hex.EncodeToString(sum.Sum(nil)[:16])
			return h(msg)
		}
	}
}
