package integration_test

// Helpers of the end-to-end reliability tests (e2e_test.go): the real
// hexmill binary as a process, its configuration, its JSON log, and the
// RabbitMQ names a test owns.

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/load"
)

// EnvE2EFull makes the end-to-end tests run at full size (see e2eScale).
const EnvE2EFull = "HEXMILL_E2E_FULL"

var e2eFull = flag.Bool("full", false, "run the end-to-end tests at full size (also "+EnvE2EFull+"=1)")

var (
	binDir     string
	binOnce    sync.Once
	binPath    string
	binErr     error
	binElapsed time.Duration
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hexmill-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := integration.WithBrokers(m).Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// hexmillBinary builds integration/testservice (the framework's own service) with -race once per test process, on
// first use, so that test runs which select no end-to-end test do not pay
// for the build.
func hexmillBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		start := time.Now()
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		binPath = filepath.Join(binDir, "hexmill")
		build := exec.Command("go", "build", "-race", "-o", binPath, "./integration/testservice/cmd/testservice")
		build.Dir = root
		out, err := build.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("build hexmill: %v\n%s", err, out)
		}
		binElapsed = time.Since(start)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// scale is the size of one test's load.
type scale struct {
	Count int     // messages
	Rate  float64 // messages per second over all publishers; 0 = as fast as confirmed
}

// e2eScale is the CI size, or the full size with -full or HEXMILL_E2E_FULL=1.
func e2eScale(ci, full scale) scale {
	if *e2eFull || os.Getenv(EnvE2EFull) == "1" {
		return full
	}
	return ci
}

// e2eEnv is what one end-to-end test owns: a run ID, a private mosquitto,
// RabbitMQ names (the events exchange, the poison queue, the checker's
// queue), deleted when the test ends.
type e2eEnv struct {
	t         *testing.T
	run       string
	rabbitURL string
	mosquitto *integration.Mosquitto
	// mqttAddr and rabbitAddr are where the service connects: the brokers,
	// or proxies in front of them.
	mqttAddr, rabbitAddr string

	exchange, poisonQueue, sinkQueue, group string
	drainTimeout                            time.Duration
	// rabbitURLs, when set, are the nodes the service is given (urls)
	// instead of rabbitAddr; queueType is the poison queue's type
	// (classic by default); rabbitExtra is added to transports.rabbitmq
	// (indented by four spaces).
	rabbitURLs             []string
	queueType, rabbitExtra string
	// extra is appended to the service's YAML configuration;
	// extraHandlers and extraEvents to its handlers and events mappings
	// (indented by two spaces).
	extra, extraHandlers, extraEvents string
	// telemetryExtra is added to handlers.telemetry (indented by four
	// spaces).
	telemetryExtra string
}

func newE2EEnv(t *testing.T) *e2eEnv {
	t.Helper()
	rabbitURL := integration.RabbitMQURL(t)
	_ = integration.MQTTURL(t) // skip with the usual message when no MQTT broker is configured
	m := integration.StartMosquitto(t, "")
	run := load.NewRunID()
	e := &e2eEnv{
		t: t, run: run, rabbitURL: rabbitURL, mosquitto: m,
		mqttAddr:     m.Addr(),
		rabbitAddr:   hostPort(t, rabbitURL),
		exchange:     "e2e-" + run + "-events",
		poisonQueue:  "e2e-" + run + "-poison",
		sinkQueue:    "e2e-" + run + "-sink",
		group:        "e2e-" + run,
		drainTimeout: 10 * time.Second,
	}
	t.Cleanup(e.deleteRabbitMQNames)
	return e
}

func hostPort(t *testing.T, amqpURL string) string {
	t.Helper()
	u, err := amqp.ParseURI(amqpURL)
	if err != nil {
		t.Fatalf("parse %s: %v", integration.EnvRabbitMQ, err)
	}
	return u.Host + ":" + strconv.Itoa(u.Port)
}

// serviceRabbitURL is the RabbitMQ URL the service dials: the test
// broker's credentials and vhost at rabbitAddr.
func (e *e2eEnv) serviceRabbitURL() string {
	u, err := amqp.ParseURI(e.rabbitURL)
	if err != nil {
		e.t.Fatal(err)
	}
	host, port, _ := strings.Cut(e.rabbitAddr, ":")
	u.Host = host
	u.Port, _ = strconv.Atoi(port)
	return u.String()
}

// rabbitNodes is the rabbitmq section's url, or urls with rabbitURLs.
func (e *e2eEnv) rabbitNodes() string {
	if len(e.rabbitURLs) > 0 {
		return "urls: [" + strings.Join(e.rabbitURLs, ", ") + "]"
	}
	return "url: " + e.serviceRabbitURL()
}

// begin returns the context a test of scale sc runs in (ended with the
// test) and the checker reading the sink.
func (e *e2eEnv) begin(sc scale) (context.Context, *load.Checker) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute+time.Duration(sc.Count)*time.Millisecond)
	e.t.Cleanup(cancel)
	return ctx, e.checker(15 * time.Second)
}

// checker starts the load checker on a queue of the test bound to the
// events exchange with AlertRaised; it must exist before the service
// publishes (the AlertRaised binding is mandatory).
func (e *e2eEnv) checker(quiet time.Duration) *load.Checker {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	chk, err := load.NewChecker(ctx, load.CheckConfig{
		URL: e.rabbitURL, Queue: e.sinkQueue, Exchange: e.exchange, BindingKey: "AlertRaised",
		RunID: e.run, QuietTimeout: quiet, DeleteQueue: true,
	})
	if err != nil {
		e.t.Fatalf("checker: %v", err)
	}
	e.t.Cleanup(func() { _ = chk.Close() })
	return chk
}

// config writes the service's YAML configuration for replica into the
// test's temporary directory and returns its path.
func (e *e2eEnv) config(replica string) string {
	e.t.Helper()
	conf := fmt.Sprintf(`service: e2e-%[1]s
http_addr: 127.0.0.1:0
drain_timeout: %[2]s
log:
  level: info
  format: json
retry:
  max_retries: 3
  initial_interval: 100ms
  max_interval: 1s
  multiplier: 2
poison:
  transport: rabbitmq
  topic: %[3]s
transports:
  mqtt:
    servers: [mqtt://%[4]s]
    client_id: e2e-%[1]s-%[5]s-{conn}-{n}
    reconnect_min: 50ms
    reconnect_max: 1s
  rabbitmq:
    %[6]s
    connection_name: e2e-%[1]s-%[5]s
%[12]s
    reconnect:
      initial_interval: 50ms
      max_interval: 1s
    publish:
      outage_wait: 30s
    exchanges:
      - name: %[7]s
        type: topic
    queues:
      - name: %[3]s
        type: %[13]s
handlers:
  telemetry:
    transport: mqtt
    topic: devices/+/telemetry
    group: %[8]s
    topic_params: devices/{device_id}/telemetry
%[14]s%[10]sevents:
  AlertRaised:
    transport: rabbitmq
    topic: AlertRaised
    options:
      exchange: %[7]s
%[11]sdomain:
  thresholds:
    seq: -1
%[9]s`, e.run, e.drainTimeout, e.poisonQueue, e.mqttAddr, replica, e.rabbitNodes(), e.exchange, e.group, e.extra, e.extraHandlers, e.extraEvents,
		e.rabbitExtra, cmp.Or(e.queueType, "classic"), e.telemetryExtra)
	path := filepath.Join(e.t.TempDir(), "hexmill-"+replica+".yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// deleteRabbitMQNames deletes the exchange and the poison queue of the
// test (the checker deletes its own queue).
func (e *e2eEnv) deleteRabbitMQNames() {
	conn, err := amqp.Dial(e.rabbitURL)
	if err != nil {
		e.t.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		e.t.Logf("cleanup: %v", err)
		return
	}
	if _, err := ch.QueueDelete(e.poisonQueue, false, false, false); err != nil {
		e.t.Logf("cleanup: delete queue %s: %v", e.poisonQueue, err)
		if ch, err = conn.Channel(); err != nil {
			return
		}
	}
	if err := ch.ExchangeDelete(e.exchange, false, false); err != nil {
		e.t.Logf("cleanup: delete exchange %s: %v", e.exchange, err)
	}
}

// send is the test's generator: MQTT v5 QoS 1 to the private mosquitto
// (never through the service's proxies).
func (e *e2eEnv) send(ctx context.Context, s scale) (load.SendResult, error) {
	return load.Send(ctx, load.SendConfig{
		Transport: load.MQTT, URL: e.mosquitto.URL(), RunID: e.run, Count: s.Count, Rate: s.Rate,
		Publishers: 4, Devices: 8, ClientIDPrefix: "e2e-load",
	})
}

// service is one hexmill process, its JSON log lines parsed as they come.
type service struct {
	*integration.Process
	name string
	addr string // ops HTTP host:port
}

// startService starts a replica (its own client IDs) and waits until it
// consumes. The process is killed when the test ends if it still runs.
func (e *e2eEnv) startService(replica string, env ...string) *service {
	e.t.Helper()
	t := e.t
	cmd := exec.Command(hexmillBinary(t))
	cmd.Env = append(os.Environ(), "HEXMILL_CONFIG="+e.config(replica), "GORACE=halt_on_error=1")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout = io.Discard
	s := &service{Process: integration.StartProcess(t, replica, cmd), name: replica}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("HEXMILL_E2E_DUMP") != "" {
			s.Dump(t, 40)
		}
	})
	s.addr, _ = s.WaitLog(t, "ops http listening", integration.MsgIs("ops http listening"))["addr"].(string)
	s.WaitLog(t, "consuming", integration.MsgIs("consuming"))
	return s
}

func levelAtLeastError(l map[string]any) bool { return l["level"] == "ERROR" }

// signal sends sig to the process.
func (s *service) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", s.name, sig, err)
	}
}

// kill SIGKILLs the process and waits for it.
func (s *service) kill(t *testing.T) {
	t.Helper()
	s.signal(t, syscall.SIGKILL)
	_ = s.Wait()
}

// get fetches an ops endpoint.
func (s *service) get(path string) (int, string, error) {
	resp, err := http.Get("http://" + s.addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// handled is the number of telemetry messages the replica handled
// successfully, from /metrics.
func (s *service) handled(t *testing.T) int {
	t.Helper()
	return s.handledBy(t, "telemetry")
}

// handledBy is the number of messages handler handled successfully in the
// replica, from /metrics.
func (s *service) handledBy(t *testing.T, handler string) int {
	t.Helper()
	code, body, err := s.get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s: /metrics: %d %v", s.name, code, err)
	}
	n := 0
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "hexmill_handler_execution_time_seconds_count{") ||
			!strings.Contains(line, `handler_name="`+handler+`"`) || !strings.Contains(line, `success="true"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("%s: /metrics: %q: %v", s.name, line, err)
		}
		n += int(v)
	}
	return n
}

// requireReady fails unless /readyz answers 200.
func (s *service) requireReady(t *testing.T) {
	t.Helper()
	code, body, err := s.get("/readyz")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s: /readyz: %d %q %v", s.name, code, body, err)
	}
}

// awaitRecovery polls /readyz (there is no log line saying the service is
// whole again) every 10 ms after a fault: first for the service noticing
// it (not ready), then for ready again. It returns the time from the call
// to ready again, and whether the not-ready window was seen at all (a
// reconnect faster than the polling can slip through).
func (s *service) awaitRecovery(t *testing.T, within time.Duration) (time.Duration, bool) {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	sawDown := false
	for {
		code, _, err := s.get("/readyz")
		up := err == nil && code == http.StatusOK
		if !up {
			sawDown = true
		}
		if up && (sawDown || time.Since(start) > 2*time.Second) {
			return time.Since(start), sawDown
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not ready %s after the fault", s.name, within)
		}
		<-tick.C
	}
}

// exitCode is the process's exit status, -1 when killed by a signal.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	return -2
}

// sendAsync runs the generator in a goroutine the test owns; the result
// comes on the returned channel (buffered: the goroutine never blocks).
func (e *e2eEnv) sendAsync(ctx context.Context, s scale) <-chan sendOutcome {
	out := make(chan sendOutcome, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r, err := e.send(ctx, s)
		out <- sendOutcome{r, err}
	}()
	e.t.Cleanup(wg.Wait)
	return out
}

type sendOutcome struct {
	sent load.SendResult
	err  error
}

// finish waits for the generator and the checker, logs the report and
// fails on loss. It returns the report.
func finish(t *testing.T, ctx context.Context, chk *load.Checker, sending <-chan sendOutcome) load.Report {
	t.Helper()
	var out sendOutcome
	select {
	case out = <-sending:
	case <-ctx.Done():
		t.Fatalf("generator did not finish: %v", ctx.Err())
	}
	if out.err != nil {
		t.Fatalf("generator: %v (confirmed %d of %d)", out.err, out.sent.Confirmed, out.sent.Count)
	}
	report, err := chk.Wait(ctx, out.sent)
	t.Logf("report: %s", report)
	t.Logf("sent %d / received %d / lost %d / duplicated %d; latency p50 %s p99 %s max %s; longest gap %s at %s; republished %d (no subscriber %d)",
		report.Sent, report.Received, report.Lost, report.Duplicated, report.LatencyP50, report.LatencyP99, report.LatencyMax,
		report.LongestGap.Round(time.Millisecond), report.LongestGapAt.Round(time.Millisecond), report.Republished, report.NoSubscribers)
	if err != nil {
		t.Fatalf("checker: %v", err)
	}
	if !report.OK() || report.Lost != 0 {
		t.Fatalf("lost %d messages, first: %v", report.Lost, report.LostSample)
	}
	if report.Sent != out.sent.Count {
		t.Fatalf("generator confirmed %d of %d", report.Sent, out.sent.Count)
	}
	return report
}
