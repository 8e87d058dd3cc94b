package integration_test

// The ops port's promises on the real binary (docs/security.md): /inject
// off unless configured, on in the zero-config demo, behind ops.token when
// set, a 404 that lists nothing, and a /readyz that names the failing parts
// only, their details in the log.

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hexmill/hexmill/integration"
)

// startOps runs the binary with JSON logs and the ops server on a free
// port, and returns it with the server's address once it consumes.
func startOps(t *testing.T, env ...string) (*integration.Process, string) {
	t.Helper()
	cmd := exec.Command(hexmillBinary(t))
	cmd.Env = append(os.Environ(), append([]string{"HEXMILL_LOG_FORMAT=json", "HEXMILL_HTTP_ADDR=127.0.0.1:0"}, env...)...)
	p := integration.StartProcess(t, "hexmill", cmd)
	addr := p.WaitLog(t, "ops http listening", integration.MsgIs("ops http listening"))["addr"].(string)
	p.WaitLog(t, "consuming", integration.MsgIs("consuming"))
	return p, "http://" + addr
}

// opsConfigFile writes a configuration file and returns its variable.
func opsConfigFile(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hexmill.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return "HEXMILL_CONFIG=" + path
}

func post(t *testing.T, url, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const reading = `{"device_id":"ops-1","readings":{"temperature":20}}`

// No configuration file and only memory: /inject is on, as the README's
// make run + curl needs; its 404 names no handler; its body is bounded.
func TestOpsInjectInZeroConfigDemo(t *testing.T) {
	_, base := startOps(t)
	if code, body := post(t, base+"/inject/telemetry", "", reading); code != http.StatusAccepted {
		t.Fatalf("inject in the demo: %d %s, want 202", code, body)
	}
	code, body := post(t, base+"/inject/telemetri", "", reading)
	if code != http.StatusNotFound {
		t.Fatalf("inject to no handler: %d %s, want 404", code, body)
	}
	for _, name := range []string{"telemetry", "device-status"} {
		if strings.Contains(body, name) {
			t.Errorf("the 404 names the handler %s: %q", name, body)
		}
	}
	if code, body := post(t, base+"/inject/telemetry", "", `"`+strings.Repeat("x", 2<<20)+`"`); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("inject of 2 MiB: %d %.200s, want 413", code, body)
	}
}

// With a configuration file (or a broker), /inject is off unless
// ops.inject is true.
func TestOpsInjectOffWithConfigFile(t *testing.T) {
	cases := []struct {
		name string
		env  []string
	}{
		{"configuration file", []string{opsConfigFile(t, "drain_timeout: 5s\n")}},
		{"a binding on a broker", []string{"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT=mqtt", "HEXMILL_TRANSPORTS_MQTT_SERVERS=" + integration.MQTTURL(t)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, base := startOps(t, tc.env...)
			code, body := post(t, base+"/inject/telemetry", "", reading)
			if code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
				t.Fatalf("inject: %d %s, want it off (404)", code, body)
			}
			if strings.Contains(body, "telemetry") {
				t.Errorf("the answer names the handler: %q", body)
			}
		})
	}
}

// ops.inject: true with ops.token: 401 without the bearer token or with
// another, 202 with it; the token is never logged.
func TestOpsInjectToken(t *testing.T) {
	const token = "ops-t0ken-s3cret"
	p, base := startOps(t, opsConfigFile(t, "ops:\n  inject: true\n"), "HEXMILL_OPS_TOKEN="+token, "HEXMILL_LOG_LEVEL=debug")
	for _, auth := range []string{"", "Bearer", "Bearer wrong", token, "Basic " + token, "Bearer " + token + "x"} {
		if code, body := post(t, base+"/inject/telemetry", auth, reading); code != http.StatusUnauthorized || strings.Contains(body, token) {
			t.Errorf("inject with Authorization %q: %d %q, want 401", auth, code, body)
		}
	}
	if code, body := post(t, base+"/inject/telemetry", "Bearer "+token, reading); code != http.StatusAccepted {
		t.Fatalf("inject with the token: %d %s, want 202", code, body)
	}
	if code, body := post(t, base+"/inject/nosuch", "Bearer "+token, reading); code != http.StatusNotFound || strings.Contains(body, "telemetry") {
		t.Errorf("inject to no handler: %d %q, want 404 naming no handler", code, body)
	}
	if n := p.CountLog(func(l map[string]any) bool { return strings.Contains(fmt.Sprint(l), token) }); n > 0 {
		t.Errorf("%d log lines hold ops.token", n)
	}
}

// /readyz names the failing transport only; the broker's address, the
// client ID and the driver's error go to the log, once per change rather
// than once per probe.
func TestOpsReadyzNamesPartsOnly(t *testing.T) {
	u, err := url.Parse(integration.MQTTURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := integration.NewProxy(t, u.Host)
	const clientID = "hx-ready-cid"
	p, base := startOps(t,
		"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT=mqtt",
		"HEXMILL_TRANSPORTS_MQTT_SERVERS=mqtt://"+proxy.Addr(),
		"HEXMILL_TRANSPORTS_MQTT_CLIENT_ID="+clientID+"-{conn}-{n}",
		"HEXMILL_TRANSPORTS_MQTT_RECONNECT_MIN=50ms", "HEXMILL_TRANSPORTS_MQTT_RECONNECT_MAX=200ms")
	defer func() {
		if t.Failed() {
			p.Dump(t, 30)
		}
	}()
	readyz := func() (int, string) {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// await polls /readyz until it answers want and returns the body.
	await := func(want int, what string) string {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			code, body := readyz()
			if code == want {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz = %d %s 30 s after %s", code, body, what)
			}
		}
	}
	await(http.StatusOK, "the start")
	before := p.CountLog(integration.MsgIs("not ready"))
	if before > 0 { // not connected yet at the first probe: logged, and its end too
		p.WaitLog(t, "ready after the start", integration.MsgIs("ready"))
	}

	proxy.Refuse(true)
	proxy.Cut()
	body := await(http.StatusServiceUnavailable, "the broker went away")
	if strings.TrimSpace(body) != "not ready: transports.mqtt" {
		t.Errorf("/readyz body %q, want only the failing transport named", body)
	}
	for _, leak := range []string{proxy.Addr(), "127.0.0.1", clientID, "connect", "refused", "EOF"} {
		if strings.Contains(body, leak) {
			t.Errorf("/readyz body %q holds %q", body, leak)
		}
	}
	for range 20 {
		readyz()
	}
	line := p.WaitLog(t, "the reason in the log", integration.MsgIs("not ready"))
	if line["parts"] != "transports.mqtt" || line["reasons"] == "" {
		t.Errorf("log line %v, want the part and its reasons", line)
	}
	if n := p.CountLog(integration.MsgIs("not ready")) - before; n > 2 {
		t.Errorf("%d 'not ready' log lines for 21 probes of one outage, want it logged on change", n)
	}

	proxy.Refuse(false)
	await(http.StatusOK, "the broker came back")
	p.WaitLog(t, "ready again in the log", integration.MsgIs("ready"))
}
