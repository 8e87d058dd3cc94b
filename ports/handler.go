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
	Attributes map[string]string
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc struct {
	HandlerName string
	Func        func(ctx context.Context, msg Message) error
}

// Name implements Handler.
func (h HandlerFunc) Name() string { return h.HandlerName }

// Handle implements Handler.
func (h HandlerFunc) Handle(ctx context.Context, msg Message) error { return h.Func(ctx, msg) }

// JSONHandler is a typed handler: it decodes the payload into T (unknown
// fields are refused) and calls handle. A payload that does not decode is
// Invalid.
func JSONHandler[T any](name string, handle func(ctx context.Context, in T, md Metadata) error) Handler {
	return HandlerFunc{HandlerName: name, Func: func(ctx context.Context, msg Message) error {
		var in T
		if err := DecodeJSON(msg.Payload, &in); err != nil {
			return err
		}
		return handle(ctx, in, msg.Metadata)
	}}
}

// DecodeJSON decodes one JSON document into v, refusing unknown fields and
// trailing data; the error is Invalid and says what is wrong.
func DecodeJSON(payload []byte, v any) error {
	if len(bytes.TrimSpace(payload)) == 0 {
		return Invalid(fmt.Errorf("decode %T: the payload is empty; want a JSON document", v))
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Invalid(fmt.Errorf("decode %T: %w", v, err))
	}
	// dec.More reports false before a stray "}" or "]": ask for the next
	// token instead; only the end of the input is fine.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Invalid(fmt.Errorf("decode %T: trailing data after the JSON document", v))
	}
	return nil
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
