package rabbitmq_test

import (
	"context"
	"strings"
	"testing"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
)

// CheckTarget tells a publish target that exists from one that does not,
// by passive declares, before anything is published.
func TestCheckTarget(t *testing.T) {
	exchange, queue := uniqueName("target-x"), uniqueName("target-q")
	c := newClient(t, rabbitmq.Config{
		Exchanges: []rabbitmq.ExchangeConfig{{Name: exchange, Type: "topic", Durable: ptr(false)}},
		Queues:    []rabbitmq.QueueConfig{{Name: queue, Type: "classic", Durable: ptr(false)}},
	})
	newAdmin(t).cleanup([]string{queue}, []string{exchange})
	tests := []struct {
		name    string
		topic   string
		options map[string]string
		want    string // "" for exists
	}{
		{"declared exchange", "any.key", map[string]string{"exchange": exchange}, ""},
		{"default exchange to a declared queue", queue, nil, ""},
		{"missing exchange", "k", map[string]string{"exchange": exchange + ".missing"}, "does not exist"},
		{"default exchange without the queue", "battery.low", nil, `no queue "battery.low"`},
		{"unknown option", "k", map[string]string{"exchnage": "x"}, "exchnage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.CheckTarget(context.Background(), tt.topic, tt.options)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("CheckTarget() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("CheckTarget() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// The client is still usable after the failed passive declares.
	if err := c.CheckTarget(context.Background(), queue, nil); err != nil {
		t.Fatalf("after the failures: %v", err)
	}
}
