package integration_test

import (
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/hexmill/hexmill/integration"
)

// otlpReceiver is a minimal OTLP/HTTP collector: it decodes the export
// requests the service sends to /v1/traces and keeps their spans.
type otlpReceiver struct {
	addr string

	mu      sync.Mutex
	spans   []*tracepb.Span
	service []string // service.name of each resource
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{addr: l.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var export coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &export); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range export.ResourceSpans {
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.name" {
					r.service = append(r.service, a.GetValue().GetStringValue())
				}
			}
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		r.mu.Unlock()
		resp, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(resp)
	})
	srv := &http.Server{Handler: mux}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return r
}

// inTrace returns the names of the spans received in trace, by count.
func (r *otlpReceiver) inTrace(trace string) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := map[string]int{}
	for _, s := range r.spans {
		if hex.EncodeToString(s.TraceId) == trace {
			names[s.Name]++
		}
	}
	return names
}

// The binary exports its spans over OTLP/HTTP to the collector its
// configuration names, and SIGTERM exports what it still holds: readings
// injected with a traceparent give consume, handle and publish spans in
// their traces, all of them received once the process has exited, though
// the exporter's batch delay (5 s) had not passed.
func TestTracingExportedAtStop(t *testing.T) {
	collector := newOTLPReceiver(t)
	cmd := exec.Command(hexmillBinary(t))
	cmd.Env = append(os.Environ(),
		"HEXMILL_SERVICE=hx-trace-e2e", "HEXMILL_LOG_FORMAT=json", "HEXMILL_HTTP_ADDR=127.0.0.1:0",
		"HEXMILL_DOMAIN_THRESHOLDS_TEMPERATURE=80",
		"HEXMILL_TRACING_ENDPOINT=http://"+collector.addr, "HEXMILL_TRACING_PROTOCOL=http/protobuf")
	s := integration.StartProcess(t, "hexmill", cmd)
	defer func() {
		if t.Failed() {
			s.Dump(t, 40)
		}
	}()
	addr := s.WaitLog(t, "ops http listening", integration.MsgIs("ops http listening"))["addr"].(string)
	s.WaitLog(t, "consuming", integration.MsgIs("consuming"))

	const n = 5
	traces := make([]string, n)
	for i := range n {
		traces[i] = fmt.Sprintf("%032x", 0xabc000+i)
		body := fmt.Sprintf(`{"device_id":"trace-%d","readings":{"temperature":150}}`, i)
		if i == n-1 {
			body = `{"device_id":"trace-bad","readings":{"temperature":"hot"}}`
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/inject/telemetry", strings.NewReader(body))
		req.Header.Set("traceparent", "00-"+traces[i]+"-00f067aa0ba902b7-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("inject: %d", resp.StatusCode)
		}
	}
	s.WaitLog(t, "the bad reading poisoned", integration.MsgIs("message poisoned"))
	handled := &service{name: "hexmill", addr: addr}
	for deadline := time.Now().Add(time.Minute); handled.handled(t) < n-1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d good readings handled after a minute", handled.handled(t), n-1)
		}
	}
	if err := s.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0", err)
	}

	for i, trace := range traces {
		got := collector.inTrace(trace)
		want := map[string]int{"process devices.telemetry": 1, "handle telemetry": 1, "send alerts": 1}
		if i == n-1 {
			want = map[string]int{"process devices.telemetry": 1, "handle telemetry": 1, "send hexmill.poison": 1}
		}
		for name, count := range want {
			if got[name] != count {
				t.Fatalf("trace %s: spans %v after exit, want %v", trace, got, want)
			}
		}
	}
	collector.mu.Lock()
	defer collector.mu.Unlock()
	for _, name := range collector.service {
		if name != "hx-trace-e2e" {
			t.Errorf("resource service.name %q, want the configured service", name)
		}
	}
	t.Logf("%d spans received over OTLP/HTTP by the time the process exited", len(collector.spans))
}
