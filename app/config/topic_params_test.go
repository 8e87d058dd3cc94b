package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestTopicParams(t *testing.T) {
	type match struct {
		topic string
		want  map[string]string // nil: no match
	}
	tests := []struct {
		name    string
		pattern string
		matches []match
	}{
		{
			name:    "slash-separated MQTT topic",
			pattern: "devices/{device_id}/telemetry",
			matches: []match{
				{"devices/42/telemetry", map[string]string{"device_id": "42"}},
				{"devices/dev-a_1/telemetry", map[string]string{"device_id": "dev-a_1"}},
				{"devices/42/x", nil},
				{"devices/4/2/telemetry", nil},
				{"devices//telemetry", nil},
				{"devices/42/telemetry/extra", nil},
				{"prefix/devices/42/telemetry", nil},
				{"devices/42/telemetryX", nil},
				{"Devices/42/telemetry", nil},
				{"", nil},
			},
		},
		{
			name:    "dot-separated routing key",
			pattern: "devices.{device_id}.telemetry",
			matches: []match{
				{"devices.42.telemetry", map[string]string{"device_id": "42"}},
				{"devices.4.2.telemetry", nil},
				{"devices.42.status", nil},
				// "." in the pattern is a literal, not "any character".
				{"devicesX42Xtelemetry", nil},
				{"devices/42/telemetry", nil},
			},
		},
		{
			name:    "several names",
			pattern: "{tenant}/devices/{device_id}/{kind}",
			matches: []match{
				{"acme/devices/42/status", map[string]string{"tenant": "acme", "device_id": "42", "kind": "status"}},
				{"acme/devices/42", nil},
				{"acme/devices/42/status/x", nil},
			},
		},
		{
			name:    "Aliyun topic",
			pattern: "/{product_key}/{device_name}/thing/event/property/post",
			matches: []match{
				{"/a1B2c3/dev1/thing/event/property/post", map[string]string{"product_key": "a1B2c3", "device_name": "dev1"}},
				{"/a1B2c3/dev1/thing/event/property/post_reply", nil},
			},
		},
		{
			name:    "a whole topic",
			pattern: "{kind}",
			matches: []match{
				{"telemetry", map[string]string{"kind": "telemetry"}},
				{"a.b", nil},
				{"a/b", nil},
			},
		},
		{
			name:    "regexp characters in the literal parts are literal",
			pattern: "a+b/{id}/(x)?",
			matches: []match{
				{"a+b/1/(x)?", map[string]string{"id": "1"}},
				{"aab/1/x", nil},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			re, err := ParseTopicParams(tt.pattern)
			if err != nil {
				t.Fatalf("ParseTopicParams(%q) = %v", tt.pattern, err)
			}
			for _, m := range tt.matches {
				got := re.Match(m.topic)
				if !reflect.DeepEqual(got, m.want) {
					t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, m.topic, got, m.want)
				}
			}
		})
	}
}

func TestTopicParamsEmptyPattern(t *testing.T) {
	re, err := ParseTopicParams("")
	if err != nil || re != nil {
		t.Fatalf(`ParseTopicParams("") = %v, %v; want nil, nil`, re, err)
	}
	if got := (*TopicParams)(nil).Match("devices/42/telemetry"); got != nil {
		t.Fatalf("Match on nil = %v, want nil", got)
	}
}

func TestParseTopicParamsErrors(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		want    string // substring of the error
	}{
		{"duplicate name", "devices/{id}/x/{id}", "{id} appears twice"},
		{"no name", "devices/telemetry", "names no segment"},
		{"stray closing brace", "devices/{device_id}/telemetry}", "stray brace"},
		{"stray opening brace", "devices/{device_id}/{telemetry", "stray brace"},
		{"unclosed only brace", "devices/{device_id/telemetry", "stray brace"},
		{"empty braces", "devices/{}/telemetry", "stray brace"},
		{"upper-case name", "devices/{DeviceID}/telemetry", "stray brace"},
		{"name starting with a digit", "devices/{1d}/telemetry", "stray brace"},
		{"name with a dash", "devices/{device-id}/telemetry", "stray brace"},
		{"nested braces", "devices/{{device_id}}/telemetry", "stray brace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			re, err := ParseTopicParams(tt.pattern)
			if err == nil {
				t.Fatalf("ParseTopicParams(%q) = %v, nil; want an error containing %q", tt.pattern, re, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseTopicParams(%q) = %q, want it to contain %q", tt.pattern, err, tt.want)
			}
		})
	}
}
