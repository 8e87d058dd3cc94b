package transport_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

func TestCheckMaxMessageBytes(t *testing.T) {
	for _, tc := range []struct {
		n  int
		ok bool
	}{
		{0, true}, {transport.MinMaxMessageBytes, true}, {1 << 20, true}, {transport.MaxMaxMessageBytes, true},
		{-1, false}, {transport.MinMaxMessageBytes - 1, false}, {transport.MaxMaxMessageBytes + 1, false},
	} {
		err := transport.CheckMaxMessageBytes("max_message_bytes", tc.n)
		var fe *ports.FieldError
		if tc.ok != (err == nil) || (err != nil && (!errors.As(err, &fe) || fe.Field != "max_message_bytes")) {
			t.Errorf("CheckMaxMessageBytes(%d) = %v, want ok %v and the field named", tc.n, err, tc.ok)
		}
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"0123456789abc", 10, "0123456…"},
		{strings.Repeat("é", 10), 8, "éé…"}, // cut on a rune boundary
	} {
		got := transport.Truncate(tc.in, tc.n)
		if got != tc.want || len(got) > tc.n || !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
