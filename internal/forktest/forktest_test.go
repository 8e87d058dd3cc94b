package forktest

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/load"
)

// sample is what a fork deletes: the sample domain and its wiring.
var sample = []string{
	"domain/telemetry.go", "domain/telemetry_test.go", "domain/status.go", "domain/status_test.go",
	"cmd/hexmill/service.go", "cmd/hexmill/demo.go", "cmd/hexmill/main_test.go", "cmd/hexmill/rabbitmq_test.go",
	"cmd/hexmill/devicestore_postgres.go", "cmd/hexmill/devicestore_postgres_test.go", "cmd/hexmill/migrations/0001_device_status.sql",
}

// block is a code block marked <!-- fork-test: path --> in a document.
var block = regexp.MustCompile("(?s)<!-- fork-test: (\\S+) -->\\s*\\n([ \\t]*)```[a-z]*\\n(.*?)\\n[ \\t]*```")

func TestForkFollowsTheREADME(t *testing.T) {
	dst := integration.CopyRepo(t)
	for _, f := range sample {
		if _, err := os.Stat(filepath.Join(dst, f)); err != nil {
			t.Skipf("%s is gone: this tree is a fork, which this test made sure of upstream", f)
		}
	}
	for _, f := range sample {
		if err := os.Remove(filepath.Join(dst, f)); err != nil {
			t.Fatalf("delete the sample's %s: %v", f, err)
		}
	}
	blocks := map[string]string{}
	for _, doc := range []string{"README.md", "docs/fork.md"} {
		b, err := os.ReadFile(filepath.Join(dst, doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range block.FindAllStringSubmatch(string(b), -1) {
			path, indent, body := m[1], m[2], m[3]
			var lines []string
			for _, l := range strings.Split(body, "\n") {
				lines = append(lines, strings.TrimPrefix(l, indent))
			}
			blocks[path] = strings.Join(lines, "\n") + "\n"
		}
	}
	for _, want := range []string{"domain/battery.go", "domain/battery_test.go", "cmd/hexmill/service.go", "battery.yaml"} {
		if blocks[want] == "" {
			t.Fatalf("no <!-- fork-test: %s --> block in README.md or docs/fork.md", want)
		}
	}
	for path, body := range blocks {
		if err := os.WriteFile(filepath.Join(dst, path), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	run(t, dst, "gofmt", "-l", "domain", "cmd/hexmill") // the README's code is gofmt's
	run(t, dst, "go", "build", "./...")
	run(t, dst, "go", "vet", "./...")
	run(t, dst, "go", "test", "-race", "-count=1", "./domain/", "./cmd/hexmill/", "./internal/architecture/")

	// A typo in an event key stops the service at start, naming the type
	// the handler declares (ports.Emits), instead of failing every publish.
	typo := strings.ReplaceAll(blocks["battery.yaml"], "BatteryLow:", "BateryLow:")
	if typo == blocks["battery.yaml"] {
		t.Fatal("battery.yaml binds no BatteryLow")
	}
	typoFile := filepath.Join(dst, "battery-typo.yaml")
	if err := os.WriteFile(typoFile, []byte(typo), 0o644); err != nil {
		t.Fatal(err)
	}
	checkBin := filepath.Join(dst, "bin", "hexmill-check")
	run(t, dst, "go", "build", "-o", checkBin, "./cmd/hexmill")
	check := exec.Command(checkBin, "-check-config")
	check.Env = append(os.Environ(), "HEXMILL_CONFIG="+typoFile)
	out, err := check.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "events.BatteryLow") || !strings.Contains(string(out), "did you mean") {
		t.Fatalf("-check-config with events.BateryLow: %v, %s; want exit status 2 naming events.BatteryLow and the binding to rename", err, out)
	}

	if testing.Short() {
		return
	}
	// The README's broker configuration, as written, against the brokers:
	// a reading of 9 % comes out as BatteryLow on the queue battery.low.
	rabbitURL, mqttURL := integration.RabbitMQURL(t), integration.MQTTURL(t)
	ch := integration.RabbitMQChannel(t, rabbitURL)
	t.Cleanup(func() {
		for _, q := range []string{"battery.low", "battery.poison"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
	})
	bin := filepath.Join(dst, "bin", "hexmill")
	run(t, dst, "go", "build", "-race", "-o", bin, "./cmd/hexmill")
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"HEXMILL_CONFIG="+filepath.Join(dst, "battery.yaml"),
		"HEXMILL_TRANSPORTS_RABBITMQ_URL="+rabbitURL,
		"HEXMILL_TRANSPORTS_MQTT_SERVERS="+mqttURL,
		"HEXMILL_HTTP_ADDR=127.0.0.1:0",
		"HEXMILL_LOG_FORMAT=json",
	)
	svc := integration.StartProcess(t, "fork", cmd)
	svc.WaitLog(t, "consuming", integration.MsgIs("consuming"))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	device := "fork-" + load.NewRunID()
	publishMQTT(t, ctx, mqttURL, "devices/"+device+"/battery", `{"percent":9}`)
	for {
		d, ok, err := ch.Get("battery.low", true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			// The README's topic and queue are shared with whatever else
			// publishes battery readings to the broker (other runs of this
			// test, internal/newservicetest's service): a BatteryLow of
			// another device is not ours.
			var got struct {
				DeviceID string `json:"device_id"`
			}
			if err := json.Unmarshal(d.Body, &got); err != nil {
				t.Fatalf("battery.low has %s, want a BatteryLow: %v", d.Body, err)
			}
			if got.DeviceID != device {
				continue
			}
			if want := `{"device_id":"` + device + `","percent":9}`; string(d.Body) != want {
				t.Fatalf("battery.low has %s, want %s", d.Body, want)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no BatteryLow on battery.low within 30s")
		case <-time.After(20 * time.Millisecond): // basic.get cannot wait
		}
	}
}

func publishMQTT(t *testing.T, ctx context.Context, mqttURL, topic, payload string) {
	t.Helper()
	u, err := url.Parse(mqttURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	id := "forktest-" + load.NewRunID()
	if ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	defer func() { _ = c.Disconnect(&paho.Disconnect{}) }()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)}); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func run(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	if name == "gofmt" && len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("gofmt -l: these need formatting:\n%s", out)
	}
}
