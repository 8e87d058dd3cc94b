package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/hexmill/hexmill/integration"
)

// EnvCompose turns on TestComposeSmoke, which builds and starts the whole
// stack with docker compose (a Docker engine and docker compose or
// docker-compose are needed; .ci/run sets it).
const EnvCompose = "HEXMILL_TEST_COMPOSE"

// TestComposeSmoke brings the stack up from docker-compose.yml with
// `make up` (on free ports, under a project name of its own), sends a
// reading over MQTT to the published port, reads the AlertRaised event
// from RabbitMQ's published port, checks /readyz, and then runs
// `make down`, after which no container, volume or network of the project
// may be left.
func TestComposeSmoke(t *testing.T) {
	if os.Getenv(EnvCompose) != "1" {
		t.Skipf("set %s=1 to run docker compose (needs a Docker engine and docker compose or docker-compose)", EnvCompose)
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	project := fmt.Sprintf("hexmill-smoke-%d", os.Getpid())
	ports := map[string]int{
		"HEXMILL_RABBITMQ_PORT":            integration.FreePort(t),
		"HEXMILL_RABBITMQ_MANAGEMENT_PORT": integration.FreePort(t),
		"HEXMILL_MQTT_PORT":                integration.FreePort(t),
		"HEXMILL_HTTP_PORT":                integration.FreePort(t),
	}
	image := project + ":smoke"
	env := append(os.Environ(), "COMPOSE_PROJECT_NAME="+project, "HEXMILL_IMAGE="+image)
	for k, v := range ports {
		env = append(env, k+"="+strconv.Itoa(v))
	}
	run := func(ctx context.Context, name string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir, cmd.Env = root, env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	down := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		return run(ctx, "make", "down")
	}
	downDone := false
	t.Cleanup(func() {
		if !downDone {
			if out, err := down(); err != nil {
				t.Errorf("make down: %v\n%s", err, out)
			}
		}
		// The service's image, built for this test only.
		_ = exec.Command("docker", "image", "rm", image).Run()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	if out, err := run(ctx, "make", "up"); err != nil {
		t.Fatalf("make up: %v\n%s", err, out)
	}
	t.Logf("make up: %s", time.Since(start).Round(time.Second))

	// Up: the service answers /readyz once it consumes and can publish.
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", ports["HEXMILL_HTTP_PORT"])
	awaitReady(t, ctx, readyz, 2*time.Minute)

	// A reading above the temperature threshold, over MQTT...
	device := "smoke-" + strconv.Itoa(os.Getpid())
	mqttAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports["HEXMILL_MQTT_PORT"]))
	pub := rawMQTTClient(t, ctx, mqttAddr, device)
	if _, err := pub.Publish(ctx, &paho.Publish{
		Topic:   "devices/" + device + "/telemetry",
		QoS:     1,
		Payload: []byte(`{"readings":{"temperature":99.5}}`),
	}); err != nil {
		t.Fatalf("publish the reading: %v", err)
	}

	// ... comes out as AlertRaised on RabbitMQ's hexmill.alerts queue.
	rabbitURL := fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", ports["HEXMILL_RABBITMQ_PORT"])
	ch := integration.RabbitMQChannel(t, rabbitURL)
	deliveries, err := ch.ConsumeWithContext(ctx, "hexmill.alerts", "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume hexmill.alerts: %v", err)
	}
	select {
	case d := <-deliveries:
		var alert struct {
			DeviceID string  `json:"device_id"`
			Metric   string  `json:"metric"`
			Value    float64 `json:"value"`
		}
		if err := json.Unmarshal(d.Body, &alert); err != nil {
			t.Fatalf("alert %q: %v", d.Body, err)
		}
		if d.Type != "AlertRaised" || d.RoutingKey != "alert.raised" || alert.DeviceID != device || alert.Metric != "temperature" || alert.Value != 99.5 {
			t.Fatalf("got %s (type %q) %s, want AlertRaised to alert.raised for %s temperature 99.5", d.RoutingKey, d.Type, d.Body, device)
		}
	case <-time.After(time.Minute):
		t.Fatal("no AlertRaised on hexmill.alerts within a minute")
	}
	awaitReady(t, ctx, readyz, 0)

	// Down: nothing of the project is left.
	volumes := projectVolumes(t, ctx, project)
	if len(volumes) == 0 {
		t.Log("the project's containers mount no volume")
	}
	downDone = true
	if out, err := down(); err != nil {
		t.Fatalf("make down: %v\n%s", err, out)
	}
	label := "label=com.docker.compose.project=" + project
	for _, what := range [][]string{
		{"ps", "-a", "-q", "--filter", label},
		{"volume", "ls", "-q", "--filter", label},
		{"network", "ls", "-q", "--filter", label},
	} {
		out, err := run(ctx, "docker", what...)
		if err != nil {
			t.Fatalf("docker %s: %v\n%s", strings.Join(what, " "), err, out)
		}
		if strings.TrimSpace(out) != "" {
			t.Errorf("left after make down (docker %s): %s", strings.Join(what, " "), out)
		}
	}
	for _, v := range volumes {
		if out, err := run(ctx, "docker", "volume", "inspect", v); err == nil {
			t.Errorf("volume %s left after make down: %s", v, out)
		}
	}
}

// awaitReady polls url until it answers 200 (there is no event to wait
// for from outside the container); with no timeout, it must answer now.
func awaitReady(t *testing.T, ctx context.Context, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: not ready (%v)", url, statusOr(resp, err))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func statusOr(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

// projectVolumes lists the volumes the project's containers mount.
func projectVolumes(t *testing.T, ctx context.Context, project string) []string {
	t.Helper()
	ids, err := exec.CommandContext(ctx, "docker", "ps", "-a", "-q", "--filter", "label=com.docker.compose.project="+project).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	var volumes []string
	for _, id := range strings.Fields(string(ids)) {
		out, err := exec.CommandContext(ctx, "docker", "inspect", "-f", `{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}`, id).Output()
		if err != nil {
			t.Fatalf("docker inspect %s: %v", id, err)
		}
		volumes = append(volumes, strings.Fields(string(out))...)
	}
	return volumes
}
