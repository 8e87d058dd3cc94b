package ports_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hexmill/hexmill/ports"
)

type reading struct {
	DeviceID string  `json:"device_id"`
	Value    float64 `json:"value"`
}

type decodeCase struct {
	name    string
	payload string
	want    reading
	wantErr string // "" for success; else a substring of the error
	// lenient is what DecodeJSON gives where only DecodeJSONStrict fails
	// (unknown fields).
	lenient *reading
}

var decodeCases = []decodeCase{
	{name: "valid", payload: `{"device_id":"d1","value":1.5}`, want: reading{"d1", 1.5}},
	{name: "surrounding white space", payload: " \n\t{\"device_id\":\"d1\"}\r\n ", want: reading{DeviceID: "d1"}},
	{name: "missing fields stay zero", payload: `{}`},
	{name: "null leaves the value alone", payload: `null`},
	{name: "empty", payload: ``, wantErr: "payload is empty"},
	{name: "only white space", payload: "  \n", wantErr: "payload is empty"},
	{name: "unknown field", payload: `{"device_id":"d1","extra":1}`, wantErr: `unknown field "extra"`, lenient: &reading{DeviceID: "d1"}},
	{name: "wrong type", payload: `{"value":"high"}`, wantErr: "reading.value"},
	{name: "not JSON", payload: `device_id=d1`, wantErr: "invalid character"},
	{name: "truncated", payload: `{"device_id":"d1"`, wantErr: "unexpected EOF"},
	{name: "trailing garbage", payload: `{"device_id":"d1"} garbage`, wantErr: "trailing data"},
	{name: "second document", payload: `{"device_id":"d1"}{"device_id":"d2"}`, wantErr: "trailing data"},
	{name: "trailing closing brace", payload: `{"device_id":"d1"}}`, wantErr: "trailing data"},
	{name: "trailing closing bracket", payload: `{"device_id":"d1"}]`, wantErr: "trailing data"},
	{name: "trailing comma", payload: `{"device_id":"d1"},`, wantErr: "trailing data"},
	{name: "trailing number", payload: `{"device_id":"d1"} 1`, wantErr: "trailing data"},
	{name: "valid after errors", payload: `{"device_id":"d2","value":-3}`, want: reading{"d2", -3}},
}

func TestDecodeJSON(t *testing.T) {
	for _, tt := range decodeCases {
		t.Run(tt.name, func(t *testing.T) { checkDecode(t, tt) })
	}
}

// Decoders are reused: whatever came before, in any order and at once, a
// payload decodes as if alone.
func TestDecodeJSONReusesDecoders(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				checkDecode(t, decodeCases[(i*(g+3))%len(decodeCases)])
			}
		})
	}
	wg.Wait()
}

func checkDecode(t *testing.T, tt decodeCase) {
	t.Helper()
	if tt.lenient != nil {
		var got reading
		if err := ports.DecodeJSON([]byte(tt.payload), &got); err != nil || got != *tt.lenient {
			t.Errorf("DecodeJSON(%q) = %+v, %v; want %+v (unknown fields ignored)", tt.payload, got, err, *tt.lenient)
		}
	}
	var got reading
	decode := ports.DecodeJSON
	if tt.lenient != nil {
		decode = ports.DecodeJSONStrict
	}
	err := decode([]byte(tt.payload), &got)
	if tt.wantErr == "" {
		if err != nil {
			t.Errorf("DecodeJSON(%q) = %v, want nil", tt.payload, err)
		} else if got != tt.want {
			t.Errorf("DecodeJSON(%q) decoded %+v, want %+v", tt.payload, got, tt.want)
		}
		return
	}
	if err == nil {
		t.Errorf("DecodeJSON(%q) = nil, want an error containing %q", tt.payload, tt.wantErr)
		return
	}
	if !errors.Is(err, ports.ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", err)
	}
	if !strings.Contains(err.Error(), tt.wantErr) {
		t.Errorf("DecodeJSON(%q) = %q, want it to contain %q", tt.payload, err, tt.wantErr)
	}
	if !strings.Contains(err.Error(), "ports_test.reading") {
		t.Errorf("DecodeJSON(%q) = %q, want it to name the target type", tt.payload, err)
	}
}

func TestJSONHandler(t *testing.T) {
	handlerErr := errors.New("handler failed")
	tests := []struct {
		name       string
		payload    string
		handleErr  error
		wantCalled bool
		wantErr    error // checked with errors.Is
	}{
		{name: "valid payload reaches the handler", payload: `{"device_id":"d1","value":2}`, wantCalled: true},
		{name: "handler error is returned as is", payload: `{"device_id":"d1"}`, handleErr: handlerErr, wantCalled: true, wantErr: handlerErr},
		{name: "bad payload is invalid and skips the handler", payload: `{"value":"high"}`, wantErr: ports.ErrInvalid},
		{name: "unknown fields are ignored", payload: `{"device_id":"d1","firmware":"2.0"}`, wantCalled: true},
		{name: "not JSON is invalid", payload: `<xml/>`, wantErr: ports.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md := ports.Metadata{
				ID:            "m-1",
				CorrelationID: "c-1",
				Topic:         "devices/d1/telemetry",
				ReceivedAt:    time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC),
				Attributes:    map[string]string{"device_id": "d1"},
			}
			var called bool
			var gotIn reading
			var gotMD ports.Metadata
			h := ports.JSONHandler("readings", func(_ context.Context, in reading, m ports.Metadata) error {
				called, gotIn, gotMD = true, in, m
				return tt.handleErr
			})
			if h.Name() != "readings" {
				t.Errorf("Name() = %q, want %q", h.Name(), "readings")
			}
			err := h.Handle(context.Background(), ports.Message{Metadata: md, Payload: []byte(tt.payload)})
			if called != tt.wantCalled {
				t.Fatalf("handler called = %v, want %v", called, tt.wantCalled)
			}
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Handle() = %v, want nil", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Handle() = %v, want errors.Is(err, %v)", err, tt.wantErr)
			}
			if tt.wantErr == handlerErr && errors.Is(err, ports.ErrInvalid) {
				t.Errorf("handler error %v became invalid", err)
			}
			if !called {
				return
			}
			if tt.payload == `{"device_id":"d1","value":2}` && gotIn != (reading{"d1", 2}) {
				t.Errorf("handler got %+v, want {d1 2}", gotIn)
			}
			if gotMD.ID != md.ID || gotMD.CorrelationID != md.CorrelationID || gotMD.Topic != md.Topic ||
				!gotMD.ReceivedAt.Equal(md.ReceivedAt) || gotMD.Attributes["device_id"] != "d1" {
				t.Errorf("handler got metadata %+v, want %+v", gotMD, md)
			}
		})
	}
}

// Strict() refuses what the default ignores.
func TestJSONHandlerStrict(t *testing.T) {
	h := ports.JSONHandler("readings", func(context.Context, reading, ports.Metadata) error { return nil }, ports.Strict())
	err := h.Handle(context.Background(), ports.Message{Payload: []byte(`{"device_id":"d1","firmware":"2.0"}`)})
	if !errors.Is(err, ports.ErrInvalid) || !strings.Contains(err.Error(), `unknown field "firmware"`) {
		t.Fatalf("Handle() = %v, want an invalid-input error naming the unknown field", err)
	}
}

func TestHandlerFunc(t *testing.T) {
	want := errors.New("boom")
	var got ports.Message
	h := ports.HandlerFunc{HandlerName: "f", Func: func(_ context.Context, m ports.Message) error {
		got = m
		return want
	}}
	var _ ports.Handler = h
	if h.Name() != "f" {
		t.Errorf("Name() = %q, want f", h.Name())
	}
	if err := h.Handle(context.Background(), ports.Message{Payload: []byte("x")}); err != want {
		t.Errorf("Handle() = %v, want %v", err, want)
	}
	if string(got.Payload) != "x" {
		t.Errorf("Func got payload %q, want x", got.Payload)
	}
}

type causeError struct{ code int }

func (e *causeError) Error() string { return fmt.Sprintf("cause %d", e.code) }

func TestInvalid(t *testing.T) {
	cause := &causeError{code: 7}
	tests := []struct {
		name string
		err  error // nil: Invalid(err) must be nil
	}{
		{name: "nil stays nil", err: nil},
		{name: "plain error", err: errors.New("bad input")},
		{name: "typed cause", err: cause},
		{name: "wrapped cause", err: fmt.Errorf("decode: %w", cause)},
		{name: "sentinel cause", err: fs.ErrNotExist},
		{name: "already invalid", err: ports.Invalid(errors.New("twice"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ports.Invalid(tt.err)
			if tt.err == nil {
				if got != nil {
					t.Fatalf("Invalid(nil) = %#v, want nil", got)
				}
				return
			}
			if got == nil {
				t.Fatal("Invalid(err) = nil, want an error")
			}
			if !errors.Is(got, ports.ErrInvalid) {
				t.Errorf("errors.Is(Invalid(err), ErrInvalid) = false, want true")
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("errors.Is(Invalid(err), err) = false: the cause is lost")
			}
			if got.Error() != tt.err.Error() {
				t.Errorf("Invalid(err).Error() = %q, want the cause's message %q", got.Error(), tt.err.Error())
			}
			// Wrapping again keeps both marks.
			wrapped := fmt.Errorf("handler: %w", got)
			if !errors.Is(wrapped, ports.ErrInvalid) || !errors.Is(wrapped, tt.err) {
				t.Errorf("fmt.Errorf(%%w) of Invalid(err) lost ErrInvalid or the cause: %v", wrapped)
			}
		})
	}

	t.Run("errors.As reaches a typed cause", func(t *testing.T) {
		var ce *causeError
		if !errors.As(ports.Invalid(fmt.Errorf("x: %w", cause)), &ce) || ce.code != 7 {
			t.Fatalf("errors.As(Invalid(...), *causeError) = %v, want the cause with code 7", ce)
		}
	})
	t.Run("ErrInvalid itself is not every error", func(t *testing.T) {
		if errors.Is(errors.New("other"), ports.ErrInvalid) {
			t.Fatal("a plain error is ErrInvalid")
		}
	})
}

func TestCorrelationID(t *testing.T) {
	tests := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"absent", context.Background(), ""},
		{"set", ports.WithCorrelationID(context.Background(), "c-1"), "c-1"},
		{"empty", ports.WithCorrelationID(context.Background(), ""), ""},
		{"innermost wins", ports.WithCorrelationID(ports.WithCorrelationID(context.Background(), "outer"), "inner"), "inner"},
		{"survives derived contexts", func() context.Context {
			ctx, cancel := context.WithCancel(ports.WithCorrelationID(context.Background(), "c-2"))
			cancel()
			return context.WithValue(ctx, struct{ k string }{"other"}, "v")
		}(), "c-2"},
		{"a plain string key does not collide", context.WithValue(context.Background(), "correlation_id", "nope"), ""}, //nolint:staticcheck // the point of the test
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ports.CorrelationID(tt.ctx); got != tt.want {
				t.Errorf("CorrelationID() = %q, want %q", got, tt.want)
			}
		})
	}
}
