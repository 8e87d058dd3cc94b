package config

import (
	"slices"
	"strings"
	"time"
)

// LogConfig sets up log/slog.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

// RetryConfig is the runtime's retry of a failing handler, with exponential
// backoff, before the message goes to the poison target.
type RetryConfig struct {
	MaxRetries      int           `yaml:"max_retries"`
	InitialInterval time.Duration `yaml:"initial_interval"`
	MaxInterval     time.Duration `yaml:"max_interval"`
	Multiplier      float64       `yaml:"multiplier"`
	// Delayed are the delayed retries (docs/retries.md): after the
	// in-process retries fail, the message is parked for the next of
	// these delays and its worker moves on; after the last, it is
	// poisoned. Empty: none. A binding's retry_delayed overrides it.
	Delayed []time.Duration `yaml:"delayed"`
	// DelayStore parks the messages of transports that cannot delay
	// natively (all but RabbitMQ): "postgres" (needs the postgres
	// section) or "" (none: retry.delayed needs RabbitMQ bindings).
	DelayStore string `yaml:"delay_store"`
	// DelayPollInterval is how often the store is asked for messages
	// whose delay is over; default 1s.
	DelayPollInterval time.Duration `yaml:"delay_poll_interval"`
}

// Binding says where a handler's messages come from.
type Binding struct {
	Transport string `yaml:"transport"`
	Topic     string `yaml:"topic"`
	Group     string `yaml:"group"`
	// Concurrency is how many messages may be in flight at once.
	Concurrency int `yaml:"concurrency"`
	// Format translates the wire format at the edge before the handler
	// sees the message: "" or "json" passes the payload as it is; a
	// transport may register more (for example Aliyun's Alink JSON).
	Format string `yaml:"format"`
	// TopicParams is a pattern such as "devices/{device_id}/telemetry": the
	// named segments of the topic a message arrived on are given to the
	// handler as attributes.
	TopicParams string `yaml:"topic_params"`
	// Idempotent handles each message at most once with effect: the
	// handler runs in a PostgreSQL transaction that also records the
	// message's ID, and a redelivered duplicate is acknowledged without
	// running it. Needs the postgres section.
	Idempotent bool `yaml:"idempotent"`
	// MessageID is what identifies a message (for idempotent handling,
	// logs and traces): "transport" (the default) takes the ID its sender
	// or broker gave it; "content" a hash of its topic and payload, for
	// senders that set no ID (most MQTT devices), whose redeliveries would
	// otherwise each get a new one. With "content", two messages with the
	// same topic and payload are one message.
	MessageID string `yaml:"message_id"`
	// MaxMessageBytes overrides the transport's max_message_bytes for
	// this binding: a larger message is never decoded nor handled, it is
	// poisoned (reason too_large) with the first PoisonPayloadBytes of
	// its payload. 0 takes the transport's.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxHandbacks bounds how often a message may be handed back to its
	// broker (its events could not be published, the database was
	// unavailable) before it is poisoned (reason handed_back_too_often).
	// 0, the default, never poisons a message for being handed back.
	MaxHandbacks int `yaml:"max_handbacks"`
	// HandlerTimeout bounds one attempt of the handler: its context is
	// cancelled then, and the attempt counts as failed (retried, then
	// poisoned). 0, the default, sets no bound.
	HandlerTimeout time.Duration `yaml:"handler_timeout"`
	// OrderBy handles the messages with the same key one at a time, in
	// arrival order, and different keys in parallel on the concurrency
	// workers. The key is a template of attributes (topic_params
	// segments, else metadata), e.g. "{device_id}"; a message without
	// them is handled unordered. "" (the default) orders nothing. See
	// docs/ordering.md.
	OrderBy string `yaml:"order_by"`
	// OrderMaxWaiting bounds the messages waiting for their key (or a
	// worker) in total, OrderMaxWaitingPerKey those of one key: at a
	// bound intake pauses. 0 takes the defaults (OrderBounds).
	OrderMaxWaiting       int `yaml:"order_max_waiting"`
	OrderMaxWaitingPerKey int `yaml:"order_max_waiting_per_key"`
	// RetryDelayed overrides retry.delayed for this binding; an empty
	// list ([]) turns delayed retries off for it.
	RetryDelayed []time.Duration   `yaml:"retry_delayed"`
	Options      map[string]string `yaml:"options"`
}

// Message identities of a binding (Binding.MessageID).
const (
	MessageIDTransport = "transport"
	MessageIDContent   = "content"
)

// EventBinding says where an outgoing event type is published.
type EventBinding struct {
	Transport string            `yaml:"transport"`
	Topic     string            `yaml:"topic"`
	Options   map[string]string `yaml:"options"`
}

// Transport names of the transports the framework brings.
const (
	TransportMemory   = "memory"
	TransportRabbitMQ = "rabbitmq"
	TransportMQTT     = "mqtt"
	TransportAliyun   = "aliyun"
)

// DefaultConcurrency is a binding's concurrency when it sets none.
const DefaultConcurrency = 64

// BindingKey finds the binding of a handler or an event type: by its
// name, else by the name without regard to case, "-" and "_" (a binding
// created from the environment is FLEET_HANDLERS_DEVICE_STATUS_... for
// device-status, FLEET_EVENTS_BATTERYLOW_... for BatteryLow).
func BindingKey[V any](bindings map[string]V, name string) (string, bool) {
	if _, ok := bindings[name]; ok {
		return name, true
	}
	for _, k := range sortedKeys(bindings) {
		if NormalKey(k) == NormalKey(name) {
			return k, true
		}
	}
	return "", false
}

// keySeparators drops the separators NormalKey ignores. One replacer for
// all calls: the event publisher normalises every event's type, and a
// replacer builds its tables (some kilobytes) on first use.
var keySeparators = strings.NewReplacer("-", "", "_", "")

// NormalKey is k without regard to case, "-" and "_": how bindings are
// matched to handler names and event types.
func NormalKey(k string) string {
	return strings.ToLower(keySeparators.Replace(k))
}

// Closest is the name among names nearest to s, if it is near enough to
// be a typo of it.
func Closest(s string, names []string) string {
	best, bestD := "", -1
	for _, n := range names {
		if d := distance(NormalKey(s), NormalKey(n)); bestD < 0 || d < bestD {
			best, bestD = n, d
		}
	}
	if bestD < 0 || bestD > max(2, len(s)/3) {
		return ""
	}
	return best
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
