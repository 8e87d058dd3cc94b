package integration_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/sync/errgroup"

	"github.com/hexmill/hexmill/integration"
)

// The memory bound of an MQTT binding (docs/mqtt.md, "Memory bound"),
// with P = max_message_bytes + 64 KiB (the Maximum Packet Size announced):
// peak RSS ≤ memoryBase + 2 × (min(receive_maximum × P,
// max_queued_bytes + P) + concurrency × P). memoryBase is the binary at
// rest, with room; 2 is the garbage collector's (GOGC=100: the heap may
// grow to twice what is live before it collects).
const memoryBase = 64 << 20

func mqttMemoryBound(receiveMaximum, maxQueuedBytes, concurrency, maxMessageBytes int) int {
	p := maxMessageBytes + 64<<10
	return memoryBase + 2*(min(receiveMaximum*p, maxQueuedBytes+p)+concurrency*p)
}

// A flood of messages just under max_message_bytes, at full in-flight (a
// slow handler: concurrency below receive_maximum, so that the
// subscriber holds receive_maximum messages), keeps the binary's peak RSS
// (VmHWM) under the documented bound; a message over the limit never
// reaches the handler (it is poisoned too_large).
func TestMQTTFloodStaysUnderMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and floods a private mosquitto")
	}
	_ = integration.MQTTURL(t) // skip with the usual message when no MQTT broker is configured
	const (
		maxBytes    = 256 << 10
		concurrency = 4
		messages    = 600
		publishers  = 6
	)
	for _, tt := range []struct {
		name                           string
		receiveMaximum, maxQueuedBytes int
	}{
		{"bounded by receive_maximum", 32, 64 << 20},
		{"bounded by max_queued_bytes", 65535, 4 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			floodMQTT(t, tt.receiveMaximum, tt.maxQueuedBytes, concurrency, maxBytes, messages, publishers)
		})
	}
}

func floodMQTT(t *testing.T, receiveMaximum, maxQueuedBytes, concurrency, maxBytes, messages, publishers int) {
	m := integration.StartMosquitto(t, "")
	bin := boundsBinary(t)
	conf := fmt.Sprintf(`service: bounds
http_addr: 127.0.0.1:0
log: {format: json}
poison: {transport: memory, topic: poison}
transports:
  mqtt:
    servers: [%s]
    receive_maximum: %d
    max_queued_bytes: %d
    max_message_bytes: %d
handlers:
  telemetry: {transport: mqtt, topic: flood/+/telemetry, group: g, concurrency: %d, topic_params: "flood/{device_id}/telemetry"}
events:
  AlertRaised: {transport: memory, topic: alerts}
domain:
  thresholds: {temperature: 80}
`, m.URL(), receiveMaximum, maxQueuedBytes, maxBytes, concurrency)
	path := filepath.Join(t.TempDir(), "bounds.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "HEXMILL_CONFIG="+path)
	cmd.Stdout = io.Discard
	p := integration.StartProcess(t, "bounds", cmd)
	addr, _ := p.WaitLog(t, "ops http listening", integration.MsgIs("ops http listening"))["addr"].(string)
	p.WaitLog(t, "consuming", integration.MsgIs("consuming"))
	t.Cleanup(func() {
		if t.Failed() {
			p.Dump(t, 20)
		}
	})
	atRest := vmHWM(t, cmd.Process.Pid)

	// Valid JSON just under the limit: the padding is whitespace.
	body := `{"readings":{"temperature":1}}`
	under := body + strings.Repeat(" ", maxBytes-len(body)-100)
	over := body + strings.Repeat(" ", maxBytes+1-len(body))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pubs := make([]*autopaho.ConnectionManager, publishers)
	for i := range pubs {
		pubs[i] = floodClient(t, ctx, m.URL(), fmt.Sprintf("flood-%d-%d", receiveMaximum, i))
	}
	if _, err := pubs[0].Publish(ctx, &paho.Publish{Topic: "flood/over/telemetry", QoS: 1, Payload: []byte(over)}); err != nil {
		t.Fatal(err)
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, c := range pubs {
		g.Go(func() error {
			for n := i; n < messages; n += publishers {
				if _, err := c.Publish(gctx, &paho.Publish{Topic: fmt.Sprintf("flood/d-%d/telemetry", n%50), QoS: 1, Payload: []byte(under)}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	var handled, tooLarge, invalid int
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		metrics := scrape(t, addr)
		handled = int(metrics[`hexmill_handler_execution_time_seconds_count{handler_name="telemetry",success="true"}`])
		tooLarge = int(metrics[`hexmill_messages_poisoned_total{handler_name="telemetry",reason="too_large"}`])
		invalid = int(metrics[`hexmill_messages_poisoned_total{handler_name="telemetry",reason="invalid"}`])
		if handled+tooLarge+invalid >= messages+1 || time.Now().After(deadline) {
			break
		}
	}
	peak := vmHWM(t, cmd.Process.Pid)
	bound := mqttMemoryBound(receiveMaximum, maxQueuedBytes, concurrency, maxBytes)
	t.Logf("VmHWM at rest %d KiB, after %d messages of %d KiB %d KiB; documented bound %d KiB",
		atRest>>10, messages, len(under)>>10, peak>>10, bound>>10)
	if handled != messages || tooLarge != 1 || invalid != 0 {
		t.Fatalf("handled %d, poisoned too_large %d, invalid %d; want %d, 1 (the message over the limit, never handled), 0", handled, tooLarge, invalid, messages)
	}
	if peak > bound {
		t.Fatalf("peak RSS %d KiB above the documented bound %d KiB", peak>>10, bound>>10)
	}
}

// floodClient is a publisher connected to brokerURL.
func floodClient(t *testing.T, ctx context.Context, brokerURL, id string) *autopaho.ConnectionManager {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		ClientConfig: paho.ClientConfig{ClientID: id + "-" + strconv.Itoa(os.Getpid())},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cm.Disconnect(context.Background()) })
	if err := cm.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	return cm
}

// vmHWM is the peak resident set size of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/<pid>/status")
	return 0
}

// scrape reads the samples of /metrics, by name and labels.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	s := bufio.NewScanner(resp.Body)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

var (
	boundsOnce sync.Once
	boundsPath string
	boundsErr  error
)

// boundsBinary builds the test service without the race detector, whose
// shadow memory would swamp the figure measured.
func boundsBinary(t *testing.T) string {
	t.Helper()
	boundsOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		boundsPath = filepath.Join(binDir, "hexmill-norace")
		build := exec.Command("go", "build", "-o", boundsPath, "./integration/testservice/cmd/testservice")
		build.Dir = filepath.Dir(filepath.Dir(file))
		if out, err := build.CombinedOutput(); err != nil {
			boundsErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if boundsErr != nil {
		t.Fatal(boundsErr)
	}
	return boundsPath
}
