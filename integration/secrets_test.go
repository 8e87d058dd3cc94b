package integration_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/hexmill/hexmill/integration"
)

// Where a configuration holds a secret in the wrong place (a URL's query or
// userinfo, a URL that does not parse), the binary refuses it in one line,
// exit status 2, without printing it: on start, with -check-config and with
// -print-config.
func TestSecretRefusalsNeverPrinted(t *testing.T) {
	const secret = "s3cret-in-the-wrong-place"
	cases := []struct {
		name string
		env  []string
		want []string
	}{
		{"postgres password in the url query", []string{"HEXMILL_POSTGRES_URL=postgres://hexmill@127.0.0.1:1/hexmill?sslmode=disable&password=" + secret}, []string{"postgres.url", "password=", "postgres.password"}},
		{"postgres sslpassword in the url query", []string{"HEXMILL_POSTGRES_URL=postgres://hexmill@127.0.0.1:1/hexmill?sslpassword=" + secret}, []string{"postgres.url", "sslpassword="}},
		{"postgres password in the url", []string{"HEXMILL_POSTGRES_URL=postgres://hexmill:" + secret + "@127.0.0.1:1/hexmill"}, []string{"postgres.url", "postgres.password"}},
		{"postgres url that does not parse", []string{"HEXMILL_POSTGRES_URL=postgres://hexmill:" + secret + " x@127.0.0.1:1/hexmill"}, []string{"postgres.url"}},
		{"tracing endpoint with credentials", []string{"HEXMILL_TRACING_ENDPOINT=http://user:" + secret + "@127.0.0.1:4318"}, []string{"tracing.endpoint", "credentials"}},
		{"tracing endpoint that does not parse", []string{"HEXMILL_TRACING_ENDPOINT=http://user:" + secret + " x@127.0.0.1:4318"}, []string{"tracing.endpoint"}},
		{"mqtt server that does not parse", []string{"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT=mqtt", "HEXMILL_TRANSPORTS_MQTT_SERVERS=mqtt://u:" + secret + " x@127.0.0.1:1883"}, []string{"transports.mqtt.servers"}},
		{"mqtt server with credentials", []string{"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT=mqtt", "HEXMILL_TRANSPORTS_MQTT_SERVERS=mqtt://u:" + secret + "@127.0.0.1:1883"}, []string{"transports.mqtt.servers", "credentials"}},
		{"mqtt server without a scheme", []string{"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT=mqtt", "HEXMILL_TRANSPORTS_MQTT_SERVERS=u:" + secret + "@127.0.0.1:1883"}, []string{"transports.mqtt.servers"}},
		{"rabbitmq url that does not parse", []string{"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT=rabbitmq", "HEXMILL_TRANSPORTS_RABBITMQ_URL=amqp://guest:" + secret + " x@127.0.0.1:1/"}, []string{"transports.rabbitmq.url"}},
		{"rabbitmq url without a scheme", []string{"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT=rabbitmq", "HEXMILL_TRANSPORTS_RABBITMQ_URL=guest:" + secret + "@127.0.0.1:1/"}, []string{"transports.rabbitmq.url"}},
		// Any other configuration error, with every secret set.
		{"another error", []string{"HEXMILL_LOG_LEVEL=loud", "HEXMILL_OPS_TOKEN=" + secret, "HEXMILL_TRANSPORTS_RABBITMQ_PASSWORD=" + secret,
			"HEXMILL_TRANSPORTS_MQTT_PASSWORD=" + secret, "HEXMILL_TRANSPORTS_ALIYUN_ACCESS_KEY_SECRET=" + secret}, []string{"log.level"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, args := range [][]string{nil, {"-check-config"}, {"-print-config"}} {
				cmd := exec.Command(hexmillBinary(t), args...)
				cmd.Env = append(os.Environ(), append([]string{"HEXMILL_HTTP_ADDR=127.0.0.1:0", "HEXMILL_LOG_LEVEL=debug"}, tc.env...)...)
				out, err := cmd.CombinedOutput()
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 2 {
					t.Fatalf("%v: exit %v, want status 2\n%s", args, err, out)
				}
				if strings.Contains(string(out), secret) {
					t.Errorf("%v: the secret is printed:\n%s", args, out)
				}
				if line := strings.TrimSpace(string(out)); strings.Contains(line, "\n") {
					t.Errorf("%v: want one line, got:\n%s", args, line)
				}
				for _, w := range tc.want {
					if !strings.Contains(string(out), w) {
						t.Errorf("%v: %q does not name %q", args, out, w)
					}
				}
			}
		})
	}
}

// A service that runs with every secret set logs none of them, from the
// start to the stop, at debug level; -print-config shows them redacted.
func TestSecretsNotInStartLog(t *testing.T) {
	secrets := map[string]string{
		"HEXMILL_OPS_TOKEN":                           "ops-s3cret",
		"HEXMILL_TRANSPORTS_MQTT_USERNAME":            "hexmill",
		"HEXMILL_TRANSPORTS_MQTT_PASSWORD":            "mqtt-s3cret",
		"HEXMILL_TRANSPORTS_RABBITMQ_PASSWORD":        "rabbit-s3cret",
		"HEXMILL_TRANSPORTS_ALIYUN_ACCESS_KEY_SECRET": "aliyun-s3cret",
		"HEXMILL_TRANSPORTS_ALIYUN_SECURITY_TOKEN":    "sts-s3cret",
	}
	env := []string{"HEXMILL_LOG_FORMAT=json", "HEXMILL_LOG_LEVEL=debug", "HEXMILL_HTTP_ADDR=127.0.0.1:0", "HEXMILL_OPS_INJECT=true",
		"HEXMILL_EVENTS_ALERTRAISED_TRANSPORT=mqtt", "HEXMILL_TRANSPORTS_MQTT_SERVERS=" + integration.MQTTURL(t)}
	for k, v := range secrets {
		env = append(env, k+"="+v)
	}
	check := func(what, out string) {
		t.Helper()
		for k, v := range secrets {
			if k != "HEXMILL_TRANSPORTS_MQTT_USERNAME" && strings.Contains(out, v) {
				t.Errorf("%s shows %s's value:\n%s", what, k, out)
			}
		}
	}

	dump := exec.Command(hexmillBinary(t), "-print-config")
	dump.Env = append(os.Environ(), env...)
	out, err := dump.CombinedOutput()
	if err != nil {
		t.Fatalf("-print-config: %v\n%s", err, out)
	}
	check("-print-config", string(out))
	if !strings.Contains(string(out), "token: '[redacted]'") {
		t.Errorf("-print-config does not show ops.token redacted:\n%s", out)
	}

	cmd := exec.Command(hexmillBinary(t))
	cmd.Env = append(os.Environ(), env...)
	p := integration.StartProcess(t, "hexmill", cmd)
	p.WaitLog(t, "consuming", integration.MsgIs("consuming"))
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = p.Wait()
	var lines []string
	p.CountLog(func(l map[string]any) bool { lines = append(lines, fmt.Sprint(l)); return false })
	if len(lines) == 0 {
		t.Fatal("no log")
	}
	check("the log", strings.Join(lines, "\n"))
}

// -print-config redacts a password written in an MQTT server URL, as it
// does the RabbitMQ url and urls, whether or not a binding uses MQTT.
func TestPrintConfigRedactsServerURLs(t *testing.T) {
	const secret = "url-s3cret"
	cases := []struct {
		env  []string
		want []string
	}{
		{[]string{"HEXMILL_TRANSPORTS_MQTT_SERVERS=mqtts://u:" + secret + "@broker.example:8883,mqtt://u:" + secret + "@127.0.0.1:1883",
			"HEXMILL_TRANSPORTS_RABBITMQ_URL=amqp://guest:" + secret + "@127.0.0.1:5672/"},
			[]string{"mqtts://u:xxxxx@broker.example:8883", "mqtt://u:xxxxx@127.0.0.1:1883", "amqp://guest:xxxxx@127.0.0.1:5672/"}},
		{[]string{"HEXMILL_TRANSPORTS_RABBITMQ_URLS=amqp://guest:" + secret + "@127.0.0.1:5672/,amqp://guest:" + secret + "@127.0.0.2:5672/"},
			[]string{"amqp://guest:xxxxx@127.0.0.2:5672/"}},
	}
	for _, tc := range cases {
		cmd := exec.Command(hexmillBinary(t), "-print-config")
		cmd.Env = append(os.Environ(), append([]string{"HEXMILL_HTTP_ADDR=127.0.0.1:0"}, tc.env...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: -print-config: %v\n%s", tc.env, err, out)
		}
		if strings.Contains(string(out), secret) {
			t.Errorf("%v: -print-config shows the password:\n%s", tc.env, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%v: -print-config does not show %s", tc.env, w)
			}
		}
	}
}
