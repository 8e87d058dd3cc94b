package runtime

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
)

func TestDeliveryAttempt(t *testing.T) {
	tests := []struct {
		value string
		want  int
	}{{"", 1}, {"1", 1}, {"3", 3}, {"0", 1}, {"-2", 1}, {"x", 1}}
	for _, tt := range tests {
		msg := message.NewMessage("m", nil)
		if tt.value != "" {
			msg.Metadata.Set(transport.MetadataDeliveryAttempt, tt.value)
		}
		if got := deliveryAttempt(msg); got != tt.want {
			t.Errorf("deliveryAttempt(%q) = %d, want %d", tt.value, got, tt.want)
		}
	}
}

// Every delivery's reason is kept, one line each, and the whole stays
// within MetadataValueBytes however long the reasons are.
func TestAttemptReasons(t *testing.T) {
	long := strings.Repeat("x", 2*transport.MetadataValueBytes)
	tests := []struct {
		name   string
		prev   string
		n      int
		err    error
		want   string // "" checks the bound only
		fields int
	}{
		{name: "first", n: 1, err: errors.New("boom"), want: "1: boom", fields: 1},
		{name: "appended", prev: "1: boom", n: 2, err: errors.New("bang\nagain"), want: "1: boom\n2: bang again", fields: 2},
		{name: "long reason", prev: "1: boom", n: 2, err: errors.New(long), fields: 2},
		{name: "many long reasons", prev: strings.Repeat("9: "+long[:300]+"\n", 19) + "20: x", n: 21, err: errors.New(long), fields: 21},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := message.NewMessage("m", nil)
			if tt.prev != "" {
				msg.Metadata.Set(transport.MetadataAttemptReasons, tt.prev)
			}
			got := attemptReasons(msg, tt.n, tt.err)
			if tt.want != "" && got != tt.want {
				t.Errorf("attemptReasons = %q, want %q", got, tt.want)
			}
			if len(got) > transport.MetadataValueBytes {
				t.Errorf("attemptReasons has %d bytes, above %d", len(got), transport.MetadataValueBytes)
			}
			if lines := strings.Split(got, "\n"); len(lines) != tt.fields || !strings.HasPrefix(lines[len(lines)-1], strconv.Itoa(tt.n)+": ") {
				t.Errorf("attemptReasons = %q: %d lines, want %d, the last for delivery %d", got, len(lines), tt.fields, tt.n)
			}
		})
	}
}
