package main_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

// An injected body reaches the log clipped, never whole: the demo logs
// what lands on the poison target, and the body is anyone's.
func TestInjectedBodyNotLoggedWhole(t *testing.T) {
	s := startService(t, "HEXMILL_DEMO_INTERVAL=1h")
	addr := s.WaitLog(t, "ops http listening", integration.MsgIs("ops http listening"))["addr"].(string)
	s.WaitLog(t, "consuming", integration.MsgIs("consuming"))
	const marker = "hx-end-of-body"
	body := `{"device_id":"big","readings":{"temperature":"hot"},"pad":"` + strings.Repeat("x", 8<<10) + `","end":"` + marker + `"}`
	resp, err := http.Post("http://"+addr+"/inject/telemetry", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("inject: %d", resp.StatusCode)
	}
	line := s.WaitLog(t, "the poisoned body", integration.MsgIs("poison"))
	if p, _ := line["payload"].(string); !strings.Contains(p, `"device_id":"big"`) || len(p) > 1024 {
		t.Errorf("poison log payload is %d bytes, want the body's start, clipped: %.200s", len(p), p)
	}
	if n := s.CountLog(func(l map[string]any) bool { return strings.Contains(fmt.Sprint(l), marker) }); n > 0 {
		t.Errorf("%d log lines hold the whole injected body", n)
	}
}
