package integration

import (
	"errors"
	"strings"
	"testing"
)

// A container that did not start names the fix: TESTCONTAINERS_RYUK_DISABLED
// where the reaper failed, the variable of a broker of one's own always.
func TestContainerError(t *testing.T) {
	for _, tc := range []struct {
		err  string
		want []string
	}{
		{"create reaper: pull testcontainers/ryuk:0.13.0: connection refused", []string{"TESTCONTAINERS_RYUK_DISABLED=true", EnvRabbitMQ, "connection refused"}},
		{"pull rabbitmq:3.13-management: not found", []string{"image pullable", EnvRabbitMQ, "not found"}},
	} {
		got := containerError(EnvRabbitMQ, errors.New(tc.err)).Error()
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("containerError(%q) = %q, want it to name %q", tc.err, got, w)
			}
		}
	}
}
