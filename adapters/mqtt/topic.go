package mqtt

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrInvalidTopic is returned, wrapped, for a topic the broker would refuse
// or that would not mean what the caller expects.
var ErrInvalidTopic = errors.New("invalid topic")

const sharePrefix = "$share/"

// checkPublishTopic refuses what must never reach the broker as a publish
// topic: wildcards and $share/ (publishers publish to the plain topic; the
// broker splits it among a group's members).
func checkPublishTopic(topic string) error {
	switch {
	case topic == "":
		return fmt.Errorf("%w: empty publish topic", ErrInvalidTopic)
	case strings.HasPrefix(topic, sharePrefix) || topic == "$share":
		return fmt.Errorf("%w: %q: publish to the plain topic; $share/{group}/ is for subscriptions only (set the binding's group)", ErrInvalidTopic, topic)
	case strings.ContainsAny(topic, "+#"):
		return fmt.Errorf("%w: %q: a publish topic must not contain the wildcards + or #", ErrInvalidTopic, topic)
	case strings.ContainsRune(topic, 0):
		return fmt.Errorf("%w: %q contains a NUL character", ErrInvalidTopic, topic)
	case !utf8.ValidString(topic):
		return fmt.Errorf("%w: %q is not valid UTF-8 (MQTT topics must be)", ErrInvalidTopic, topic)
	}
	return nil
}

// checkFilter validates a subscription topic filter: + and # occupy a whole
// level, # only the last one; $share is written by the adapter, never by
// the user.
func checkFilter(filter string) error {
	if filter == "" {
		return fmt.Errorf("%w: empty topic filter", ErrInvalidTopic)
	}
	if strings.HasPrefix(filter, sharePrefix) || filter == "$share" {
		return fmt.Errorf("%w: %q: do not write $share/ in the topic; set the binding's group and the adapter subscribes to $share/{group}/{filter}", ErrInvalidTopic, filter)
	}
	if strings.ContainsRune(filter, 0) {
		return fmt.Errorf("%w: %q contains a NUL character", ErrInvalidTopic, filter)
	}
	if !utf8.ValidString(filter) {
		return fmt.Errorf("%w: %q is not valid UTF-8 (MQTT topic filters must be)", ErrInvalidTopic, filter)
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && len(l) != 1 {
			return fmt.Errorf("%w: %q: a wildcard must be a whole level (a/+/c, a/#)", ErrInvalidTopic, filter)
		}
		if l == "#" && i != len(levels)-1 {
			return fmt.Errorf("%w: %q: # must be the last level", ErrInvalidTopic, filter)
		}
	}
	return nil
}

// checkGroup validates a consumer group name: $share/{group}/ forbids /,
// + and # in it.
func checkGroup(group string) error {
	if strings.ContainsAny(group, "/+#") || strings.ContainsRune(group, 0) {
		return fmt.Errorf("group: %q must not contain /, + or #; use e.g. telemetry-workers", group)
	}
	return nil
}

// subscriptionFilter is what the adapter subscribes to for filter in group.
func subscriptionFilter(group, filter string) string {
	if group == "" {
		return filter
	}
	return sharePrefix + group + "/" + filter
}
