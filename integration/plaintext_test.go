package integration_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"gopkg.in/yaml.v3"

	"github.com/hexmill/hexmill/integration"
)

// A password or token in plaintext to a host that is not loopback refuses
// the start with one line naming the setting and the fix, exit status 2,
// before anything connects (the hosts here are never dialled).
func TestPlaintextCredentialsRefused(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want []string
	}{
		{"rabbitmq amqp://", []string{"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT=rabbitmq", "HEXMILL_POISON_TRANSPORT=rabbitmq",
			"HEXMILL_TRANSPORTS_RABBITMQ_URL=amqp://app@rabbit.invalid:5672/", "HEXMILL_TRANSPORTS_RABBITMQ_PASSWORD=hunter2"},
			[]string{"transports.rabbitmq.url", "HEXMILL_TRANSPORTS_RABBITMQ_URL", "amqps://", "allow_plaintext: true"}},
		{"mqtt:// with a password", []string{"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT=mqtt", "HEXMILL_POISON_TRANSPORT=mqtt",
			"HEXMILL_TRANSPORTS_MQTT_SERVERS=mqtt://broker.invalid:1883", "HEXMILL_TRANSPORTS_MQTT_USERNAME=app", "HEXMILL_TRANSPORTS_MQTT_PASSWORD=hunter2"},
			[]string{"transports.mqtt.servers", "mqtts://", "allow_plaintext: true"}},
		{"aliyun tls: false", []string{"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT=aliyun", "HEXMILL_HANDLERS_TELEMETRY_TOPIC=", "HEXMILL_POISON_TRANSPORT=memory",
			"HEXMILL_TRANSPORTS_ALIYUN_HOST=iot.invalid", "HEXMILL_TRANSPORTS_ALIYUN_TLS=false", "HEXMILL_TRANSPORTS_ALIYUN_ACCESS_KEY_ID=ak",
			"HEXMILL_TRANSPORTS_ALIYUN_ACCESS_KEY_SECRET=hunter2", "HEXMILL_TRANSPORTS_ALIYUN_CONSUMER_GROUP_ID=g", "HEXMILL_TRANSPORTS_ALIYUN_CLIENT_ID=c"},
			[]string{"transports.aliyun.tls", "allow_plaintext: true"}},
		{"postgres sslmode=disable", []string{"HEXMILL_POSTGRES_URL=postgres://app@db.invalid:5432/app?sslmode=disable", "HEXMILL_POSTGRES_PASSWORD=hunter2"},
			[]string{"postgres.url", "HEXMILL_POSTGRES_URL", "verify-full", "allow_plaintext: true"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, args := range [][]string{nil, {"-check-config"}} {
				checkInvalid(t, args, tc.env, tc.want)
			}
		})
	}
}

// allow_plaintext and insecure_skip_verify log a warning at every start,
// naming the setting.
func TestInsecureSettingsWarnAtStart(t *testing.T) {
	if testing.Short() {
		t.Skip("needs brokers")
	}
	cmd := exec.Command(hexmillBinary(t))
	cmd.Env = append(os.Environ(),
		"HEXMILL_HTTP_ADDR=off", "HEXMILL_LOG_FORMAT=json",
		"HEXMILL_HANDLERS_TELEMETRY_TRANSPORT=mqtt", "HEXMILL_HANDLERS_TELEMETRY_TOPIC=hx-warn/"+watermill.NewShortUUID(),
		"HEXMILL_POISON_TRANSPORT=mqtt",
		"HEXMILL_TRANSPORTS_MQTT_SERVERS="+integration.MQTTURL(t),
		"HEXMILL_TRANSPORTS_MQTT_ALLOW_PLAINTEXT=true", "HEXMILL_TRANSPORTS_MQTT_TLS_INSECURE_SKIP_VERIFY=true",
	)
	p := integration.StartProcess(t, "hexmill", cmd)
	p.WaitLog(t, "consuming", integration.MsgIs("consuming"))
	for _, setting := range []string{"transports.mqtt.allow_plaintext", "transports.mqtt.tls.insecure_skip_verify"} {
		if p.CountLog(func(l map[string]any) bool { return l["level"] == "WARN" && l["msg"] == "insecure setting: "+setting }) != 1 {
			p.Dump(t, 20)
			t.Errorf("no WARN naming %s at start", setting)
		}
	}
	// StartProcess kills it when the test ends.
}

// The compose stack's configuration (docker-compose.yml's environment of
// the service, with deploy/hexmill.compose.yaml and, for STATE=1,
// deploy/state.compose.yaml) passes -check-config: its brokers are other
// containers, not loopback, so it needs the allow_plaintext it sets; and
// without them the start would be refused.
func TestComposeConfigAllowsPlaintextExplicitly(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	base := composeEnv(t, filepath.Join(root, "docker-compose.yml"))
	state := composeEnv(t, filepath.Join(root, "deploy", "state.compose.yaml"))
	base["HEXMILL_CONFIG"] = filepath.Join(root, "deploy", "hexmill.compose.yaml")
	for name, env := range map[string]map[string]string{"default": base, "state": merge(base, state)} {
		t.Run(name, func(t *testing.T) {
			var hatches []string
			for k := range env {
				if strings.HasSuffix(k, "_ALLOW_PLAINTEXT") {
					hatches = append(hatches, k)
				}
			}
			sort.Strings(hatches)
			if len(hatches) == 0 {
				t.Fatal("the compose files set no allow_plaintext")
			}
			run := func(env map[string]string) (string, error) {
				cmd := exec.Command(hexmillBinary(t), "-check-config")
				cmd.Env = os.Environ()
				for k, v := range env {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			if out, err := run(env); err != nil {
				t.Fatalf("-check-config: %v\n%s", err, out)
			}
			for _, hatch := range hatches {
				without := merge(env, nil)
				delete(without, hatch)
				out, err := run(without)
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(out, "allow_plaintext") {
					t.Errorf("without %s: %v\n%s; want exit 2 naming allow_plaintext (a compose host is not loopback)", hatch, err, out)
				}
			}
		})
	}
}

// composeEnv is the environment a compose file gives the hexmill service,
// with ${VAR:-default} as its default.
func composeEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	env := map[string]string{}
	for k, v := range f.Services["hexmill"].Environment {
		if i := strings.Index(v, "${"); i >= 0 {
			if j := strings.Index(v, ":-"); j > i {
				v = v[:i] + strings.TrimSuffix(v[j+2:], "}")
			}
		}
		env[k] = v
	}
	return env
}

func merge(a, b map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}
