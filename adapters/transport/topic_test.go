package transport_test

import (
	"testing"

	"github.com/hexmill/hexmill/adapters/transport"
)

func TestMatchTopic(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"", "/x/y", true},
		{"#", "/x/y", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"tele/+/data", "tele/7/data", true},
		{"tele/+/data", "tele/7/x/data", false},
		{"tele/#", "tele", true},
		{"tele/#", "tele/a/b", true},
		{"/+/+/thing/event/property/post", "/pk/dev/thing/event/property/post", true},
		{"/+/+/thing/event/property/post", "/pk/dev/thing/event/property/post_reply", false},
		{"/as/mqtt/status/#", "/as/mqtt/status", true},
		{"/as/mqtt/status/#", "/pk/dev/thing/event/property/post", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+", "a/", true},
		{"a/+", "a", false},
		{"/+/#", "/x/y/z", true},
	} {
		if got := transport.MatchTopic(tc.filter, tc.topic); got != tc.want {
			t.Errorf("MatchTopic(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}
