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
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/integration"
)

// EnvCompose turns on TestComposeSmoke, which builds and starts the whole
// stack with docker compose (a Docker engine and docker compose or
// docker-compose are needed; .ci/run sets it).
const EnvCompose = "HEXMILL_TEST_COMPOSE"

// TestComposeSmoke brings the stack up from docker-compose.yml with
// `make up`, twice: as it is (a reading over MQTT comes out as AlertRaised
// on RabbitMQ) and with STATE=1 (a device status report over MQTT is kept
// in the state profile's PostgreSQL and comes out as DeviceStatusChanged).
// Each run has free ports and a project name of its own, checks /readyz,
// and ends with `make down`, after which no container, volume or network
// of its project may be left. The runs share the service's image, so the
// second build is cached.
func TestComposeSmoke(t *testing.T) {
	if os.Getenv(EnvCompose) != "1" {
		t.Skipf("set %s=1 to run docker compose (needs a Docker engine and docker compose or docker-compose)", EnvCompose)
	}
	prefix := fmt.Sprintf("hexmill-smoke-%d", os.Getpid())
	image := prefix + ":smoke"
	t.Cleanup(func() {
		// The service's image, built for this test only.
		_ = exec.Command("docker", "image", "rm", image).Run()
	})

	t.Run("default", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		s := composeUp(t, ctx, composeStack{project: prefix, image: image})

		// A reading above the temperature threshold, over MQTT...
		device := "smoke-" + strconv.Itoa(os.Getpid())
		s.publishMQTT(t, ctx, device, "devices/"+device+"/telemetry", `{"readings":{"temperature":99.5}}`)

		// ... comes out as AlertRaised on RabbitMQ's hexmill.alerts queue.
		d := s.receive(t, ctx, "hexmill.alerts")
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
		awaitReady(t, ctx, s.readyz(), 0)
		s.down(t, ctx)
	})

	t.Run("state", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		s := composeUp(t, ctx, composeStack{project: prefix + "-state", image: image, state: true})

		// A status report over MQTT, the device ID in the topic only...
		device := "smoke-state-" + strconv.Itoa(os.Getpid())
		at := time.Now().UTC().Truncate(time.Millisecond)
		s.publishMQTT(t, ctx, device, "devices/"+device+"/status",
			fmt.Sprintf(`{"status":"online","at":%q}`, at.Format(time.RFC3339Nano)))

		// ... comes out of the outbox as DeviceStatusChanged on
		// hexmill.device-status...
		d := s.receive(t, ctx, "hexmill.device-status")
		var changed struct {
			DeviceID string    `json:"device_id"`
			Online   bool      `json:"online"`
			At       time.Time `json:"at"`
		}
		if err := json.Unmarshal(d.Body, &changed); err != nil {
			t.Fatalf("DeviceStatusChanged %q: %v", d.Body, err)
		}
		if d.Type != "DeviceStatusChanged" || d.RoutingKey != "device.status-changed" || changed.DeviceID != device || !changed.Online || !changed.At.Equal(at) {
			t.Fatalf("got %s (type %q) %s, want DeviceStatusChanged to device.status-changed for %s online at %s", d.RoutingKey, d.Type, d.Body, device, at.Format(time.RFC3339Nano))
		}

		// ... and the device's row, committed with the event, is in the
		// state profile's PostgreSQL.
		url := fmt.Sprintf("postgres://hexmill:hexmill@127.0.0.1:%d/hexmill?sslmode=disable", s.ports["STACK_POSTGRES_PORT"])
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatalf("connect to the published PostgreSQL: %v", err)
		}
		var online bool
		var since time.Time
		err = conn.QueryRow(ctx, `SELECT online, since FROM device_status WHERE device_id = $1`, device).Scan(&online, &since)
		_ = conn.Close(ctx)
		if err != nil {
			t.Fatalf("the device's row in device_status: %v", err)
		}
		if !online || !since.Equal(at) {
			t.Fatalf("device_status holds online=%t since %s, want online since %s", online, since, at)
		}
		awaitReady(t, ctx, s.readyz(), 0)
		s.down(t, ctx)
	})
}

// composeStack is one `make up` of the test: its project name, the
// service's image, and STATE=1 or not.
type composeStack struct {
	project, image string
	state          bool
	root           string
	ports          map[string]int
	env            []string
	downDone       bool
}

// composeUp runs `make up` (STATE=1 for a state stack) on free ports and
// waits for /readyz; the stack is taken down at the end of the test if the
// test did not (see down).
func composeUp(t *testing.T, ctx context.Context, s composeStack) *composeStack {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	s.root = filepath.Dir(filepath.Dir(file))
	s.ports = map[string]int{
		"STACK_RABBITMQ_PORT":            integration.FreePort(t),
		"STACK_RABBITMQ_MANAGEMENT_PORT": integration.FreePort(t),
		"STACK_MQTT_PORT":                integration.FreePort(t),
		"STACK_HTTP_PORT":                integration.FreePort(t),
	}
	if s.state {
		s.ports["STACK_POSTGRES_PORT"] = integration.FreePort(t)
	}
	s.env = append(os.Environ(), "COMPOSE_PROJECT_NAME="+s.project, "STACK_IMAGE="+s.image)
	for k, v := range s.ports {
		s.env = append(s.env, k+"="+strconv.Itoa(v))
	}
	t.Cleanup(func() {
		if s.downDone {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if t.Failed() {
			s.logContainers(t, ctx)
		}
		if out, err := s.run(ctx, s.make("down")...); err != nil {
			t.Errorf("make down: %v\n%s", err, out)
		}
	})

	start := time.Now()
	if out, err := s.run(ctx, s.make("up")...); err != nil {
		t.Fatalf("make up: %v\n%s", err, out)
	}
	t.Logf("make up: %s", time.Since(start).Round(time.Second))
	// Up: the service answers /readyz once it consumes and can publish.
	awaitReady(t, ctx, s.readyz(), 2*time.Minute)
	t.Logf("ready: %s after make up", time.Since(start).Round(time.Second))
	return &s
}

// logContainers logs the last lines of each of the project's containers'
// output, for a failure's diagnosis.
func (s *composeStack) logContainers(t *testing.T, ctx context.Context) {
	t.Helper()
	out, err := s.run(ctx, "docker", "ps", "-a", "--format", "{{.Names}}", "--filter", "label=com.docker.compose.project="+s.project)
	if err != nil {
		t.Logf("docker ps: %v\n%s", err, out)
		return
	}
	for _, name := range strings.Fields(out) {
		logs, _ := s.run(ctx, "docker", "logs", "--tail", "100", name)
		t.Logf("docker logs --tail 100 %s:\n%s", name, logs)
	}
}

// make returns the command line of a make target, with STATE=1 for a
// state stack.
func (s *composeStack) make(target string) []string {
	if s.state {
		return []string{"make", target, "STATE=1"}
	}
	return []string{"make", target}
}

func (s *composeStack) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir, cmd.Env = s.root, s.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *composeStack) readyz() string {
	return fmt.Sprintf("http://127.0.0.1:%d/readyz", s.ports["STACK_HTTP_PORT"])
}

// publishMQTT publishes payload to topic at QoS 1 on the published MQTT
// port, as clientID. A PUBACK with 0x10 (no matching subscribers:
// Mosquitto dropped the message) is published again, as docs/mqtt.md asks
// of publishers, for up to 30 s, and logged: once /readyz answers, the
// service's subscription should be in place.
func (s *composeStack) publishMQTT(t *testing.T, ctx context.Context, clientID, topic, payload string) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.ports["STACK_MQTT_PORT"]))
	pub := rawMQTTClient(t, ctx, addr, clientID)
	deadline := time.Now().Add(30 * time.Second)
	for dropped := 0; ; dropped++ {
		resp, err := pub.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
		if err != nil {
			t.Fatalf("publish to %s: %v", topic, err)
		}
		switch {
		case resp.ReasonCode == 0:
			if dropped > 0 {
				t.Logf("publish to %s: PUBACK 0x10 (no matching subscribers) %d times after /readyz before it was delivered", topic, dropped)
			}
			return
		case resp.ReasonCode != 0x10 || time.Now().After(deadline):
			t.Fatalf("publish to %s: PUBACK 0x%02x (after %d times 0x10, no matching subscribers)", topic, resp.ReasonCode, dropped)
		}
		time.Sleep(250 * time.Millisecond) // no event to wait for from outside the broker
	}
}

// receive returns the first message of queue on the published RabbitMQ
// port (the service declared the queue, so it holds what was routed
// before the test consumes).
func (s *composeStack) receive(t *testing.T, ctx context.Context, queue string) amqp.Delivery {
	t.Helper()
	url := fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", s.ports["STACK_RABBITMQ_PORT"])
	ch := integration.RabbitMQChannel(t, url)
	deliveries, err := ch.ConsumeWithContext(ctx, queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume %s: %v", queue, err)
	}
	select {
	case d := <-deliveries:
		return d
	case <-time.After(time.Minute):
		t.Fatalf("nothing on %s within a minute", queue)
		return amqp.Delivery{}
	}
}

// down runs `make down` (STATE=1 for a state stack) and checks that no
// container, volume (those the containers mounted included; a state
// stack's postgres-data must be one) or network of the project is left.
func (s *composeStack) down(t *testing.T, ctx context.Context) {
	t.Helper()
	volumes := projectVolumes(t, ctx, s.project)
	if len(volumes) == 0 {
		t.Log("the project's containers mount no volume")
	}
	// docker compose names a declared volume <project>_<name>.
	if pgdata := s.project + "_postgres-data"; s.state && !slices.Contains(volumes, pgdata) {
		t.Errorf("the project's containers do not mount %s (they mount %v)", pgdata, volumes)
	}
	s.downDone = true
	start := time.Now()
	if out, err := s.run(ctx, s.make("down")...); err != nil {
		t.Fatalf("make down: %v\n%s", err, out)
	}
	t.Logf("make down: %s", time.Since(start).Round(time.Second))
	label := "label=com.docker.compose.project=" + s.project
	for _, what := range [][]string{
		{"ps", "-a", "-q", "--filter", label},
		{"volume", "ls", "-q", "--filter", label},
		{"network", "ls", "-q", "--filter", label},
	} {
		out, err := s.run(ctx, append([]string{"docker"}, what...)...)
		if err != nil {
			t.Fatalf("docker %s: %v\n%s", strings.Join(what, " "), err, out)
		}
		if strings.TrimSpace(out) != "" {
			t.Errorf("left after make down (docker %s): %s", strings.Join(what, " "), out)
		}
	}
	for _, v := range volumes {
		if out, err := s.run(ctx, "docker", "volume", "inspect", v); err == nil {
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
