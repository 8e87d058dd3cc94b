// Package ports is the domain's view of messaging: what a handler receives,
// how it publishes, and the other services it may call. It uses the standard
// library only; adapters and the app implement it.
package ports

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Handler handles the messages of one binding. Its name is the key of its
// binding in configuration (handlers.<name>).
//
// Handle returns nil once the message is fully handled: only then is it
// acknowledged to the broker. An error makes it come back, with backoff, up
// to the configured number of retries; after that it goes to the poison
// target. An error wrapped by Invalid goes to the poison target at once:
// retrying bad input cannot help. Handle must honour ctx: when it is
// cancelled the service is stopping and the message will be redelivered.
//
// Messages may arrive more than once and out of order: handlers must be
// idempotent.
type Handler interface {
	Name() string
	Handle(ctx context.Context, msg Message) error
}

// Message is one incoming message.
type Message struct {
	Metadata
	// Payload is the message body, after the binding's wire-format
	// translation (JSON for the sample domain).
	Payload []byte
}

// Metadata is what a handler may need to know about a message besides its
// payload.
type Metadata struct {
	// ID identifies the message; a redelivery has the same ID.
	ID string
	// CorrelationID ties the messages of one flow together; events published
	// while handling carry it on.
	CorrelationID string
	// Topic is the concrete topic, queue or routing key the message arrived on.
	Topic string
	// ReceivedAt is when this service received it.
	ReceivedAt time.Time
	// Attributes are values taken from the transport at the edge, for
	// example "device_id" from a topic such as devices/{device_id}/telemetry.
	// They are read only: the map may be the message's own metadata,
	// which a retry and the poison target read after the handler. A
	// handler that wants changed attributes copies them (maps.Clone).
	Attributes map[string]string
}

// Emitter is a handler that declares the event types it publishes. The
// service then checks its configuration against them at start (and in
// -check-config): every declared type needs its events.<type> binding, and
// an events.<type> binding that is a near miss of a declared type (a typo
// such as BateryLow) is refused, naming the closest. When every handler
// declares, a binding no handler publishes is refused too.
//
// Emits returns the types as their EventType() values; nil means the
// handler does not declare (nothing is checked for it), an empty non-nil
// slice that it publishes nothing.
type Emitter interface {
	Emits() []string
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc struct {
	HandlerName string
	Func        func(ctx context.Context, msg Message) error
	// Events are the event types Func publishes (Emitter); nil for
	// undeclared.
	Events []string
}

// Name implements Handler.
func (h HandlerFunc) Name() string { return h.HandlerName }

// Handle implements Handler.
func (h HandlerFunc) Handle(ctx context.Context, msg Message) error { return h.Func(ctx, msg) }

// Emits implements Emitter.
func (h HandlerFunc) Emits() []string { return h.Events }

// JSONOption changes how JSONHandler decodes, and what it declares.
type JSONOption func(*jsonOptions)

type jsonOptions struct {
	strict bool
	emits  []string
}

// Strict refuses a payload with fields T does not have (see
// DecodeJSONStrict).
func Strict() JSONOption { return func(o *jsonOptions) { o.strict = true } }

// Emits declares the events the handler publishes (see Emitter), e.g.
// ports.Emits(BatteryLow{}): a typo in their bindings then stops the
// service at start instead of failing every publish.
func Emits(events ...Event) JSONOption {
	return func(o *jsonOptions) {
		o.emits = make([]string, 0, len(events))
		for _, e := range events {
			o.emits = append(o.emits, e.EventType())
		}
	}
}

// JSONHandler is a typed handler: it decodes the payload into T and calls
// handle. Fields T does not have are ignored, so that a sender that adds a
// field (a firmware update) does not get its messages poisoned; Strict()
// refuses them instead. A payload that does not decode is Invalid.
func JSONHandler[T any](name string, handle func(ctx context.Context, in T, md Metadata) error, opts ...JSONOption) Handler {
	var o jsonOptions
	for _, opt := range opts {
		opt(&o)
	}
	decode := DecodeJSON
	if o.strict {
		decode = DecodeJSONStrict
	}
	return HandlerFunc{HandlerName: name, Events: o.emits, Func: func(ctx context.Context, msg Message) error {
		var in T
		if err := decode(msg.Payload, &in); err != nil {
			return err
		}
		return handle(ctx, in, msg.Metadata)
	}}
}

// DecodeJSON decodes one JSON document into v, ignoring fields v does not
// have and refusing trailing data; the error is Invalid and says what is
// wrong.
func DecodeJSON(payload []byte, v any) error { return decodeJSON(&lenient, payload, v) }

// DecodeJSONStrict is DecodeJSON refusing fields v does not have too.
func DecodeJSONStrict(payload []byte, v any) error { return decodeJSON(&strict, payload, v) }

func decodeJSON(pool *sync.Pool, payload []byte, v any) error {
	if len(bytes.TrimSpace(payload)) == 0 {
		return Invalid(fmt.Errorf("decode %T: the payload is empty; want a JSON document", v))
	}
	d := newDecoder(pool, payload)
	if err := d.dec.Decode(v); err != nil {
		return Invalid(fmt.Errorf("decode %T: %w", v, err))
	}
	// dec.More reports false before a stray "}" or "]": ask for the next
	// token instead; only the end of the input is fine.
	if _, err := d.dec.Token(); !errors.Is(err, io.EOF) {
		return Invalid(fmt.Errorf("decode %T: trailing data after the JSON document", v))
	}
	d.release()
	return nil
}

// decoder is a json.Decoder over a reader it can point at the next
// payload. A decoder that read a whole document and then the end of its
// input is ready for the next one; reusing it saves most of the cost and
// the garbage of a new decoder per message.
type decoder struct {
	r    bytes.Reader
	dec  *json.Decoder
	pool *sync.Pool
}

// maxPooledPayload bounds what a pooled decoder may have buffered.
const maxPooledPayload = 64 << 10

// The decoders of DecodeJSON and of DecodeJSONStrict.
var lenient, strict sync.Pool

func init() {
	lenient.New = func() any {
		d := &decoder{pool: &lenient}
		d.dec = json.NewDecoder(&d.r)
		return d
	}
	strict.New = func() any {
		d := &decoder{pool: &strict}
		d.dec = json.NewDecoder(&d.r)
		d.dec.DisallowUnknownFields()
		return d
	}
}

func newDecoder(pool *sync.Pool, payload []byte) *decoder {
	var d *decoder
	if len(payload) > maxPooledPayload {
		d = pool.New().(*decoder) // not from the pool, nor back into it
	} else {
		d = pool.Get().(*decoder)
	}
	d.r.Reset(payload)
	return d
}

// release returns a decoder that ended cleanly to the pool. One that
// failed keeps its error or its place in the stream and is dropped.
func (d *decoder) release() {
	if d.r.Size() > maxPooledPayload {
		return
	}
	d.r.Reset(nil)
	d.pool.Put(d)
}

// ErrInvalid marks input that no retry can fix.
var ErrInvalid = errors.New("invalid input")

type invalidError struct{ err error }

func (e invalidError) Error() string   { return e.err.Error() }
func (e invalidError) Unwrap() []error { return []error{e.err, ErrInvalid} }

// Invalid marks err as caused by the input itself: the message goes to the
// poison target without retries. errors.Is(err, ErrInvalid) reports it.
func Invalid(err error) error {
	if err == nil {
		return nil
	}
	return invalidError{err: err}
}
