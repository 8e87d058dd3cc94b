package integration_test

// The framework's promises about the binary, on its own service
// (integration/testservice), so that a fork that deletes the sample keeps
// them: exit statuses, one-line configuration errors, nothing connected
// on an invalid configuration, secrets never printed.

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/load"
)

// An invalid configuration gives one line naming the field, its variable
// and the fix, and exit status 2, before anything connects.
func TestInvalidConfiguration(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want []string
	}{
		{"bad duration", []string{"HEXMILL_DRAIN_TIMEOUT=soon"}, []string{"drain_timeout", "HEXMILL_DRAIN_TIMEOUT", "duration"}},
		{"unknown transport", []string{"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT=kafka"}, []string{"handlers.telemetry.transport", "HEXMILL_HANDLERS_TELEMETRY_TRANSPORT", "kafka", "memory"}},
		{"bad log level", []string{"HEXMILL_LOG_LEVEL=loud"}, []string{"log.level", "HEXMILL_LOG_LEVEL", "debug, info, warn, error"}},
		{"missing config file", []string{"HEXMILL_CONFIG=/nonexistent/hexmill.yaml"}, []string{"HEXMILL_CONFIG"}},
		{"bad qos", []string{"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT=mqtt", "HEXMILL_HANDLERS_TELEMETRY_OPTIONS_QOS=7", "HEXMILL_POISON_TRANSPORT=mqtt"}, []string{"handlers.telemetry.options", "7"}},
		{"typo in a variable", []string{"HEXMILL_HANDLERS_TELEMETRY_TOPIK=x"}, []string{"HEXMILL_HANDLERS_TELEMETRY_TOPIK", "did you mean HEXMILL_HANDLERS_TELEMETRY_TOPIC"}},
		// Found while the graph is built, not while loading: still one
		// line and status 2.
		{"binding without a handler", []string{"HEXMILL_HANDLERS_TELEMETRI_TOPIC=t", "HEXMILL_HANDLERS_TELEMETRI_TRANSPORT=memory"}, []string{"handlers.telemetri", "did you mean telemetry"}},
		{"typo in an event key", []string{"HEXMILL_EVENTS_ALERTRAISD_TRANSPORT=memory", "HEXMILL_EVENTS_ALERTRAISD_TOPIC=x"}, []string{"events.alertraisd", "did you mean AlertRaised"}},
		{"poison in memory behind a broker", []string{"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT=rabbitmq"}, []string{"poison.transport", "HEXMILL_POISON_TRANSPORT"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, args := range [][]string{nil, {"-check-config"}} {
				checkInvalid(t, args, tc.env, tc.want)
			}
		})
	}
}

// checkInvalid runs the binary with args and env and wants one line
// naming want, and exit status 2.
func checkInvalid(t *testing.T, args, env, want []string) {
	t.Helper()
	cmd := exec.Command(hexmillBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("%v %v: exit: %v (%s), want status 2", args, env, err, stderr.String())
	}
	out := strings.TrimSpace(stderr.String())
	if strings.Count(out, "\n") != 0 {
		t.Fatalf("%v: want one line, got:\n%s", args, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%v: error %q does not mention %q", args, out, w)
		}
	}
}

// With an invalid setting the service connects to nothing, even to a
// broker that a valid binding names.
func TestInvalidConfigurationConnectsNothing(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	cmd := exec.Command(hexmillBinary(t))
	cmd.Env = append(os.Environ(),
		"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT=rabbitmq",
		"HEXMILL_TRANSPORTS_RABBITMQ_URL=amqp://guest:guest@"+l.Addr().String()+"/",
		"HEXMILL_RETRY_MAX_RETRIES=-1",
	)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("exit: %v (%s), want status 2", err, out)
	}
	if !strings.Contains(string(out), "retry.max_retries") {
		t.Fatalf("error %q does not name retry.max_retries", out)
	}
	l.Close() // Accept returns: a connection made before this was counted
	select {
	case <-accepted:
		t.Fatal("the service connected to the broker although its configuration is invalid")
	default:
	}
}

// Secrets never reach the configuration dump, the log or an error.
func TestSecretsAreNeverPrinted(t *testing.T) {
	const postgresSecret = "pg-s3cret"
	secrets := map[string]string{
		"HEXMILL_TRANSPORTS_RABBITMQ_PASSWORD":        "rabbit-s3cret",
		"HEXMILL_TRANSPORTS_MQTT_PASSWORD":            "mqtt-s3cret",
		"HEXMILL_TRANSPORTS_ALIYUN_ACCESS_KEY_SECRET": "aliyun-s3cret",
		"HEXMILL_TRANSPORTS_ALIYUN_SECURITY_TOKEN":    "sts-s3cret",
	}
	env := os.Environ()
	for k, v := range secrets {
		env = append(env, k+"="+v)
	}
	cases := []struct {
		name string
		args []string
		env  []string
	}{
		{"config dump", []string{"-print-config"}, nil},
		// Bind to RabbitMQ on a port nobody listens on: start fails and
		// says why, with the URL it dialled.
		{"start error", nil, []string{
			"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT=rabbitmq",
			"HEXMILL_TRANSPORTS_RABBITMQ_URL=amqp://guest:rabbit-s3cret@127.0.0.1:1/",
			"HEXMILL_TRANSPORTS_RABBITMQ_PASSWORD=",
			"HEXMILL_HTTP_ADDR=127.0.0.1:0",
			"HEXMILL_LOG_LEVEL=debug",
		}},
		{"postgres config dump", []string{"-print-config"}, []string{
			"HEXMILL_POSTGRES_URL=postgres://hexmill@127.0.0.1:1/hexmill?sslmode=disable",
			"HEXMILL_POSTGRES_PASSWORD=" + postgresSecret,
		}},
		// PostgreSQL on a port nobody listens on: the start fails in
		// the migrations, saying why.
		{"postgres start error", nil, []string{
			"HEXMILL_POSTGRES_URL=postgres://hexmill@127.0.0.1:1/hexmill?sslmode=disable",
			"HEXMILL_POSTGRES_PASSWORD=" + postgresSecret,
			"HEXMILL_POSTGRES_CONNECT_TIMEOUT=2s",
			"HEXMILL_HTTP_ADDR=127.0.0.1:0",
			"HEXMILL_LOG_LEVEL=debug",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(hexmillBinary(t), tc.args...)
			cmd.Env = append(slices.Clone(env), tc.env...)
			out, _ := cmd.CombinedOutput()
			if len(out) == 0 {
				t.Fatal("no output")
			}
			for k, v := range secrets {
				if strings.Contains(string(out), v) {
					t.Errorf("%s's value is printed:\n%s", k, out)
				}
			}
			if strings.Contains(string(out), postgresSecret) {
				t.Errorf("HEXMILL_POSTGRES_PASSWORD's value is printed:\n%s", out)
			}
			if strings.HasSuffix(tc.name, "config dump") && !strings.Contains(string(out), "[redacted]") {
				t.Errorf("the dump does not show secrets as [redacted]:\n%s", out)
			}
		})
	}
}

// An event bound to what does not exist on the broker stops the start,
// naming the binding: a missing exchange, or the default exchange with no
// queue of the routing key's name (where every publish would be
// unroutable and its message handed back again and again).
func TestStartRefusesMissingPublishTargets(t *testing.T) {
	url := integration.RabbitMQURL(t)
	run := load.NewRunID()
	cases := []struct {
		name string
		env  []string
		want []string
	}{
		{"missing exchange", []string{"HEXMILL_EVENTS_ALERTRAISED_OPTIONS_EXCHANGE=hx-missing-" + run}, []string{"events.AlertRaised", "hx-missing-" + run, "does not exist"}},
		{"no queue behind the default exchange", []string{"HEXMILL_EVENTS_ALERTRAISED_TOPIC=hx-missing-" + run}, []string{"events.AlertRaised", `no queue "hx-missing-` + run + `"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(hexmillBinary(t))
			cmd.Env = append(os.Environ(), append([]string{
				"HEXMILL_HTTP_ADDR=127.0.0.1:0",
				"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT=rabbitmq",
				"HEXMILL_TRANSPORTS_RABBITMQ_URL=" + url,
			}, tc.env...)...)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1 (start failed)\n%s", err, out)
			}
			last := strings.TrimSpace(string(out))
			last = last[strings.LastIndex(last, "\n")+1:]
			for _, w := range tc.want {
				if !strings.Contains(last, w) {
					t.Errorf("last line %q does not mention %q", last, w)
				}
			}
		})
	}
}
