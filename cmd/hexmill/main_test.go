package main_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hexmill/hexmill/integration"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hexmill-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "hexmill")
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build hexmill:", err)
		os.Exit(1)
	}
	code := integration.WithBrokers(m).Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// startService runs the binary with JSON logs and the ops server on a free
// port.
func startService(t *testing.T, env ...string) *integration.Process {
	t.Helper()
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), append([]string{"HEXMILL_LOG_FORMAT=json", "HEXMILL_HTTP_ADDR=127.0.0.1:0"}, env...)...)
	return integration.StartProcess(t, "hexmill", cmd)
}

// The newcomer's path: no configuration, no broker; the demo pipeline
// handles messages, an injected reading raises an alert, the ops endpoints
// answer, and SIGTERM exits 0 within the drain timeout.
func TestRunInjectAndStop(t *testing.T) {
	const drainTimeout = 5 * time.Second
	s := startService(t, "HEXMILL_DEMO_INTERVAL=50ms", fmt.Sprintf("HEXMILL_DRAIN_TIMEOUT=%s", drainTimeout))
	addr := s.WaitLog(t, "ops http listening", integration.MsgIs("ops http listening"))["addr"].(string)
	base := "http://" + addr
	s.WaitLog(t, "consuming", integration.MsgIs("consuming"))
	s.WaitLog(t, "demo telemetry sent", integration.MsgIs("telemetry sent"))

	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, base+path); code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, code, body)
		}
	}

	resp, err := http.Post(base+"/inject/telemetry", "application/json",
		strings.NewReader(`{"device_id":"newcomer-1","readings":{"temperature":123.4}}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("inject: %d %s", resp.StatusCode, body)
	}
	s.WaitLog(t, "the alert for the injected reading", func(l map[string]any) bool {
		p, _ := l["payload"].(string)
		return l["msg"] == "event" && l["type"] == "AlertRaised" && strings.Contains(p, `"device_id":"newcomer-1"`) && strings.Contains(p, "123.4")
	})

	// Bad input is poisoned with a reason; the service goes on.
	resp, err = http.Post(base+"/inject/telemetry", "application/json", strings.NewReader(`{"device_id":"x","readings":{"temperature":"hot"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s.WaitLog(t, "the poisoned bad input", func(l map[string]any) bool {
		r, _ := l["reason"].(string)
		return l["msg"] == "poison" && strings.Contains(r, "readings")
	})

	if code, body := get(t, base+"/metrics"); code != http.StatusOK || !strings.Contains(body, "hexmill_handler_execution_time_seconds") {
		t.Fatalf("/metrics: %d, router metrics missing:\n%.500s", code, body)
	}

	start := time.Now()
	if err := s.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	s.WaitLog(t, "stopped", integration.MsgIs("stopped"))
	err = s.Wait()
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0", err)
	}
	if elapsed > drainTimeout {
		t.Fatalf("stop took %s, longer than the drain timeout %s", elapsed, drainTimeout)
	}
	t.Logf("SIGTERM to exit 0: %s", elapsed)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

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
	cmd := exec.Command(binary, args...)
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
	cmd := exec.Command(binary)
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
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, tc.args...)
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
			if tc.name == "config dump" && !strings.Contains(string(out), "[redacted]") {
				t.Errorf("the dump does not show secrets as [redacted]:\n%s", out)
			}
		})
	}
}
