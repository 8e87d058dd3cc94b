package transport

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/hexmill/hexmill/ports"
)

// Bounds on what one message may cost (docs/reliability.md, "Bounded
// input").
const (
	// DefaultMaxMessageBytes is every transport's max_message_bytes
	// unless configured: the largest payload a subscriber hands to a
	// handler. A larger one is poisoned with reason too_large.
	DefaultMaxMessageBytes = 1 << 20
	// MinMaxMessageBytes and MaxMaxMessageBytes bound the setting: below
	// the first a poison copy would not fit; the second is MQTT's largest
	// packet (268 435 455 bytes) less room for its topic and properties.
	MinMaxMessageBytes = 1 << 10
	MaxMaxMessageBytes = 255 << 20
	// PoisonPayloadBytes is how much of a too large payload its poison
	// copy carries.
	PoisonPayloadBytes = 4 << 10
	// MetadataValueBytes bounds each metadata value the framework writes
	// (a poison reason, an error text): a reason quoting a payload must
	// not make a header larger than a broker's frame.
	MetadataValueBytes = 1 << 10
)

// ErrMessageTooLarge marks a publish that failed because of the message
// itself (it does not fit the broker's limits): unlike a broker that is
// down, publishing it again cannot succeed, so the runtime does not hand
// the message being handled back for it, it retries and poisons it.
var ErrMessageTooLarge = errors.New("message too large for its broker")

// MessageSizer is a Transport whose configuration sets the largest
// message its subscribers hand out (max_message_bytes); the runtime gives
// a binding's own limit in SubscriberConfig.MaxMessageBytes.
type MessageSizer interface {
	MaxMessageBytes() int
}

// CheckMaxMessageBytes validates a max_message_bytes setting named field;
// 0 means the default.
func CheckMaxMessageBytes(field string, n int) error {
	if n != 0 && (n < MinMaxMessageBytes || n > MaxMaxMessageBytes) {
		return &ports.FieldError{Field: field, Fix: fmt.Sprintf("must be 0 (the default, %d) or between %d and %d bytes, e.g. 1048576",
			DefaultMaxMessageBytes, MinMaxMessageBytes, MaxMaxMessageBytes)}
	}
	return nil
}

// Truncate returns s cut to at most n bytes, on a UTF-8 boundary, with
// "…" appended when it was cut: for metadata values the framework writes.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := max(n-len(mark), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
