package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/hexmill/hexmill/ports"
)

// Defaults of an ordered binding's bounds (Binding.OrderMaxWaiting and
// OrderMaxWaitingPerKey): the total is per worker.
const (
	DefaultOrderMaxWaitingPerWorker = 4
	DefaultOrderMaxWaitingPerKey    = 16
)

// OrderKey renders a binding's order_by template, such as "{device_id}"
// or "{site}/{device_id}", from a message's attributes: each {name} is
// the topic_params segment of that name, else the metadata entry of that
// name, as the handler sees them. A nil *OrderKey renders nothing.
type OrderKey struct {
	template string
	literals []string // literals[i] comes before names[i]; the last after them
	names    []string
}

var orderPlaceholder = regexp.MustCompile(`\{([^{}\s]+)\}`)

// ParseOrderKey parses an order_by template. topicParams is the binding's
// topic_params pattern (may be empty): a placeholder that is no segment of
// it but close to one is a typo and refused. An empty template gives nil.
func ParseOrderKey(template, topicParams string) (*OrderKey, error) {
	if template == "" {
		return nil, nil
	}
	if strings.ContainsAny(orderPlaceholder.ReplaceAllString(template, ""), "{}") {
		return nil, fmt.Errorf("%q has a stray or empty brace; a placeholder is {attribute}, e.g. {device_id}", template)
	}
	k := &OrderKey{template: template}
	last := 0
	for _, m := range orderPlaceholder.FindAllStringSubmatchIndex(template, -1) {
		k.literals = append(k.literals, template[last:m[0]])
		k.names = append(k.names, template[m[2]:m[3]])
		last = m[1]
	}
	k.literals = append(k.literals, template[last:])
	if len(k.names) == 0 {
		return nil, fmt.Errorf("%q names no attribute: every message would have the same key; write e.g. {device_id}, or set concurrency: 1 for one order across all messages", template)
	}
	var params []string
	if topicParams != "" {
		for _, m := range paramName.FindAllStringSubmatch(topicParams, -1) {
			params = append(params, m[1])
		}
	}
	for _, n := range k.names {
		if len(params) == 0 || contains(params, n) {
			continue
		}
		if c := Closest(n, params); c != "" {
			return nil, fmt.Errorf("{%s} is unknown: it is no segment of topic_params %q; did you mean {%s}?", n, topicParams, c)
		}
	}
	return k, nil
}

func contains(names []string, n string) bool {
	for _, x := range names {
		if x == n {
			return true
		}
	}
	return false
}

// String is the template.
func (k *OrderKey) String() string {
	if k == nil {
		return ""
	}
	return k.template
}

// Names are the attributes the key is made of, in template order.
func (k *OrderKey) Names() []string {
	if k == nil {
		return nil
	}
	return k.names
}

// Render fills the template with lookup's values; ok is false when
// lookup has no value (or an empty one) for one of its names: the message
// has no key.
func (k *OrderKey) Render(lookup func(name string) (string, bool)) (key string, ok bool) {
	if k == nil {
		return "", false
	}
	if len(k.names) == 1 && k.literals[0] == "" && k.literals[1] == "" {
		v, ok := lookup(k.names[0])
		return v, ok && v != ""
	}
	var b strings.Builder
	for i, n := range k.names {
		v, ok := lookup(n)
		if !ok || v == "" {
			return "", false
		}
		b.WriteString(k.literals[i])
		b.WriteString(v)
	}
	b.WriteString(k.literals[len(k.names)])
	return b.String(), true
}

// Ordered reports whether the binding handles messages in order by key
// (order_by is set).
func (b Binding) Ordered() bool { return b.OrderBy != "" }

// OrderBounds are the binding's bounds on the messages waiting for their
// key, its settings or their defaults: total waiting messages
// (order_max_waiting, default 4 per worker) and per key
// (order_max_waiting_per_key, default 16).
func (b Binding) OrderBounds() (total, perKey int) {
	total, perKey = b.OrderMaxWaiting, b.OrderMaxWaitingPerKey
	if total == 0 {
		total = DefaultOrderMaxWaitingPerWorker * max(b.Concurrency, 1)
	}
	if perKey == 0 {
		perKey = DefaultOrderMaxWaitingPerKey
	}
	return total, perKey
}

// checkOrder validates the binding's order_by and its bounds.
func (b Binding) checkOrder(path string) error {
	if b.OrderBy == "" {
		if b.OrderMaxWaiting != 0 || b.OrderMaxWaitingPerKey != 0 {
			return &ports.FieldError{Field: path + ".order_by", Fix: "order_max_waiting and order_max_waiting_per_key bound ordered handling only; set order_by (e.g. \"{device_id}\") or remove them"}
		}
		return nil
	}
	if _, err := ParseOrderKey(b.OrderBy, b.TopicParams); err != nil {
		return &ports.FieldError{Field: path + ".order_by", Fix: err.Error()}
	}
	if b.OrderMaxWaiting < 0 {
		return &ports.FieldError{Field: path + ".order_max_waiting", Fix: "must be 0 (4 per worker, the default) or more, e.g. 256"}
	}
	if b.OrderMaxWaitingPerKey < 0 {
		return &ports.FieldError{Field: path + ".order_max_waiting_per_key", Fix: "must be 0 (16, the default) or more, e.g. 32"}
	}
	if b.Transport == TransportRabbitMQ {
		if n, err := strconv.Atoi(b.Options["consumers"]); err == nil && n > 1 {
			return &ports.FieldError{Field: path + ".options.consumers", Fix: fmt.Sprintf(
				"is %d, but order_by orders messages per consumer: two consumers of one queue would handle one key's messages in parallel; "+
					"use consumers: 1 with concurrency for parallel keys, or route each key to one queue (consistent-hash exchange, see docs/ordering.md)", n)}
		}
	}
	return nil
}
