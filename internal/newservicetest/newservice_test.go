package newservicetest

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/load"
)

// root is this checkout: the framework the new module's replace points at.
func root(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestNewService(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make in PATH: the test runs make new-service and the new module's make targets as a user would")
	}
	framework := root(t)

	// The brokers first, from HEXMILL_TEST_* or the shared containers, so
	// that the new module's tests use the same ones (its TestMain would
	// start containers of its own otherwise). Without either, the module
	// is still written, linted and unit-tested; the broker parts skip.
	var rabbitURL, mqttURL string
	if !testing.Short() && (os.Getenv(integration.EnvRabbitMQ) != "" && os.Getenv(integration.EnvMQTT) != "" || dockerAnswers()) {
		rabbitURL, mqttURL = integration.RabbitMQURL(t), integration.MQTTURL(t)
	}
	env := os.Environ()
	if rabbitURL != "" {
		env = append(env, integration.EnvRabbitMQ+"="+rabbitURL, integration.EnvMQTT+"="+mqttURL)
	}

	// A name of the test's own: its queues and MQTT group on shared brokers.
	name := "fleet-" + load.NewRunID()
	dir := filepath.Join(t.TempDir(), "fleet")
	makeIn(t, framework, env, "new-service", "DIR="+dir, "MODULE=example.com/fleet", "NAME="+name)

	// The module holds the service's files, none of the framework's.
	for _, f := range []string{"go.mod", "go.sum", "README.md", "Makefile", ".ci/run", "Dockerfile", "docker-compose.yml",
		"deploy/" + name + ".yaml", "domain/battery.go", "domain/battery_test.go",
		"cmd/" + name + "/main.go", "cmd/" + name + "/service.go", "cmd/" + name + "/broker_test.go"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the new module has no %s: %v", f, err)
		}
	}
	for _, f := range []string{"ports", "app", "adapters", "integration", "internal"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("the new module holds the framework's %s/: framework files never live in a service's repository", f)
		}
	}
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"module example.com/fleet\n", "github.com/hexmill/hexmill v0.1.0", "replace github.com/hexmill/hexmill => " + framework + "\n"} {
		if !strings.Contains(string(gomod), want) {
			t.Errorf("go.mod lacks %q:\n%s", want, gomod)
		}
	}

	makeIn(t, dir, env, "lint")
	if testing.Short() {
		makeIn(t, dir, env, "test", "TESTFLAGS=-short") // no containers in short mode
	} else {
		makeIn(t, dir, env, "test")
	}
	// Its deploy/ configuration is valid as written: every handler bound,
	// every event it declares too (nothing connects).
	makeIn(t, dir, env, "build")
	prefix := strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + "_"
	bin := filepath.Join(dir, "bin", name)
	check := exec.Command(bin, "-check-config")
	check.Env = append(env, prefix+"CONFIG="+filepath.Join(dir, "deploy", name+".yaml"))
	if out, err := check.CombinedOutput(); err != nil || !strings.Contains(string(out), "configuration ok") {
		t.Fatalf("%s -check-config with deploy/%s.yaml: %v\n%s", name, name, err, out)
	}

	if rabbitURL == "" {
		if testing.Short() {
			t.Skip("short mode: the new module is written, linted and tested; its binary on brokers is not run")
		}
		t.Skipf("no brokers: the new module is written, linted and tested (its broker test skipped); to run its binary on brokers set %s and %s, or run a Docker engine", integration.EnvRabbitMQ, integration.EnvMQTT)
	}

	// The binary with the module's own deploy/ configuration, as a
	// deployment runs it.
	low := name + ".battery-low"
	ch := integration.RabbitMQChannel(t, rabbitURL)
	t.Cleanup(func() {
		for _, q := range []string{low, name + ".poison"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
	})
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(env,
		prefix+"CONFIG="+filepath.Join(dir, "deploy", name+".yaml"),
		prefix+"TRANSPORTS_RABBITMQ_URL="+rabbitURL,
		prefix+"TRANSPORTS_MQTT_SERVERS="+mqttURL,
		prefix+"TRANSPORTS_MQTT_SESSION_EXPIRY=10s", // no session left behind on a shared broker
		prefix+"HTTP_ADDR=127.0.0.1:0",
	)
	svc := integration.StartProcess(t, name, cmd)
	svc.WaitLog(t, "consuming", integration.MsgIs("consuming"))

	// deploy/<name>.yaml takes devices/+/battery, which other tests on a
	// shared broker publish to as well: their devices' events are not ours.
	device := "ns-" + load.NewRunID()
	integration.PublishMQTT(t, mqttURL, "devices/"+device+"/battery", []byte(`{"percent":9}`))
	deadline := time.Now().Add(time.Minute)
	for {
		body := integration.ReadRabbitMQ(t, rabbitURL, low, time.Until(deadline))
		var got struct {
			DeviceID string `json:"device_id"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("%s has %s: %v", low, body, err)
		}
		if got.DeviceID != device {
			continue
		}
		if want := `{"device_id":"` + device + `","percent":9}`; string(body) != want {
			t.Fatalf("%s has %s, want %s", low, body, want)
		}
		break
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := svc.Wait(); err != nil {
		svc.Dump(t, 30)
		t.Fatalf("after SIGINT: %v, want exit status 0", err)
	}
}

// dockerAnswers says whether a Docker engine answers, for containers.
func dockerAnswers() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return integration.DockerAvailable(ctx) == nil
}

// TestNewServiceRefuses gives the generator bad input: each is refused
// with exit status 2 and one error naming what is wrong and the fix, and
// nothing is written.
func TestNewServiceRefuses(t *testing.T) {
	framework := root(t)
	gen := filepath.Join(t.TempDir(), "newservice")
	build := exec.Command("go", "build", "-o", gen, "./internal/newservice")
	build.Dir = framework
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./internal/newservice: %v\n%s", err, out)
	}
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	notFramework := t.TempDir()
	if err := os.WriteFile(filepath.Join(notFramework, "go.mod"), []byte("module example.com/other\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string // on top of good ones, which a later flag overrides
		want []string // in the error
	}{
		{"no dir", []string{"-dir", ""}, []string{"-dir", "DIR=../fleet"}},
		{"dir not empty", []string{"-dir", full}, []string{"is not empty", "notes.txt", "new or empty directory"}},
		{"dir inside the framework", []string{"-dir", "fleet"}, []string{"inside the framework's checkout", "DIR=../fleet"}},
		{"no module", []string{"-module", ""}, []string{"-module", "MODULE=example.com/fleet"}},
		{"module with a space", []string{"-module", "example.com/my fleet"}, []string{`-module "example.com/my fleet"`, "' ' is not allowed"}},
		{"module without a domain", []string{"-module", "fleet"}, []string{`-module "fleet"`, "domain name"}},
		{"module with an empty element", []string{"-module", "example.com//fleet"}, []string{"empty", "example.com/fleet"}},
		{"module of the framework", []string{"-module", "github.com/hexmill/hexmill/fleet"}, []string{"the framework's path", "a path of its own"}},
		{"no name", []string{"-name", ""}, []string{"-name", "NAME=fleet"}},
		{"name in capitals", []string{"-name", "Fleet"}, []string{`-name "Fleet"`, "lower case letters"}},
		{"name starting with a digit", []string{"-name", "1fleet"}, []string{`-name "1fleet"`, "starting with a letter"}},
		{"name with a slash", []string{"-name", "fleet/x"}, []string{`-name "fleet/x"`}},
		{"replace not the framework", []string{"-replace", notFramework}, []string{"-replace", "not a checkout of github.com/hexmill/hexmill"}},
		{"bad version", []string{"-version", "1.0"}, []string{`-version "1.0"`, "v0.1.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "fleet")
			args := append([]string{"-dir", dir, "-module", "example.com/fleet", "-name", "fleet"}, tt.args...)
			cmd := exec.Command(gen, args...)
			cmd.Dir = framework
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("%v: %v\n%s\nwant exit status 2", args, err, out)
			}
			if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "new-service: ") {
				t.Errorf("want one line starting new-service:, got\n%s", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("the error %q does not say %q", strings.TrimSpace(string(out)), w)
				}
			}
			for _, d := range []string{dir, filepath.Join(framework, "fleet")} {
				if _, err := os.Stat(d); err == nil {
					t.Errorf("%s was written", d)
				}
			}
			if entries, _ := os.ReadDir(full); len(entries) != 1 {
				t.Errorf("the non-empty directory changed: %v", entries)
			}
		})
	}
}

// makeIn runs make target in dir, failing the test with its output.
func makeIn(t *testing.T, dir string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command("make", append([]string{"--no-print-directory"}, args...)...)
	cmd.Dir = dir
	cmd.Env = env
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	t.Logf("make %s: %s", args[0], time.Since(start).Round(time.Second))
}
