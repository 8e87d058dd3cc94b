package config

import (
	"fmt"
	"regexp"
	"strings"
)

var paramName = regexp.MustCompile(`\{([a-z_][a-z0-9_]*)\}`)

// TopicParams matches the topics of a binding's topic_params pattern and
// names their segments. A nil *TopicParams matches nothing.
type TopicParams struct{ re *regexp.Regexp }

// ParseTopicParams compiles a pattern such as "devices/{device_id}/telemetry"
// into a matcher; each {name} matches one segment (no "/" or "."). An empty
// pattern gives nil.
func ParseTopicParams(pattern string) (*TopicParams, error) {
	if pattern == "" {
		return nil, nil
	}
	if strings.ContainsAny(paramName.ReplaceAllString(pattern, ""), "{}") {
		return nil, fmt.Errorf("%q has a stray brace; a segment name is {lower_case_letters_digits_and_underscores}", pattern)
	}
	var b strings.Builder
	b.WriteString("^")
	last := 0
	seen := map[string]bool{}
	for _, m := range paramName.FindAllStringSubmatchIndex(pattern, -1) {
		b.WriteString(regexp.QuoteMeta(pattern[last:m[0]]))
		name := pattern[m[2]:m[3]]
		if seen[name] {
			return nil, fmt.Errorf("{%s} appears twice; name each segment once", name)
		}
		seen[name] = true
		fmt.Fprintf(&b, `(?P<%s>[^/.]+)`, name)
		last = m[1]
	}
	if last == 0 {
		return nil, fmt.Errorf("%q names no segment; write e.g. devices/{device_id}/telemetry", pattern)
	}
	b.WriteString(regexp.QuoteMeta(pattern[last:]))
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, err
	}
	return &TopicParams{re: re}, nil
}

// Match returns the named segments of topic, or nil when it does not
// match.
func (p *TopicParams) Match(topic string) map[string]string {
	if p == nil {
		return nil
	}
	re := p.re
	m := re.FindStringSubmatch(topic)
	if m == nil {
		return nil
	}
	params := make(map[string]string, len(m)-1)
	for i, name := range re.SubexpNames() {
		if name != "" {
			params[name] = m[i]
		}
	}
	return params
}
