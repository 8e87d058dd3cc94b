package transport

import "strings"

// MatchTopic reports whether topic matches filter, MQTT style: "+" is one
// level, a trailing "#" any number of levels (including none: a/# matches
// a). An empty filter matches everything (Aliyun's catch-all
// subscription). Topics starting with "$" are not matched by filters
// starting with a wildcard [MQTT-4.7.2-1]. It does not allocate: it runs
// per message.
func MatchTopic(filter, topic string) bool {
	if filter == "" {
		return true
	}
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		f, fRest, fMore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, tRest, tMore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fMore || !tMore {
			return fMore == tMore || (!tMore && fRest == "#")
		}
		filter, topic = fRest, tRest
	}
}
