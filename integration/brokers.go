// Package integration holds what integration tests share: the brokers to
// test against and fault injection.
//
// Each broker comes from an environment variable when it is set (CI, docker
// compose, staging), else from a container started with testcontainers-go
// where a Docker engine runs; otherwise the test is skipped with a message
// that says how to provide one.
package integration

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Environment variables that point the tests at running brokers.
const (
	// EnvRabbitMQ is an AMQP 0-9-1 URL, e.g. amqp://guest:guest@127.0.0.1:5672/.
	EnvRabbitMQ = "HEXMILL_TEST_RABBITMQ_URL"
	// EnvMQTT is an MQTT v5 broker URL, e.g. mqtt://127.0.0.1:1883.
	EnvMQTT = "HEXMILL_TEST_MQTT_URL"
	// EnvAMQP1 is an AMQP 1.0 host:port (RabbitMQ with rabbitmq_amqp1_0),
	// e.g. 127.0.0.1:5672.
	EnvAMQP1 = "HEXMILL_TEST_AMQP1_ADDR"
)

const (
	rabbitImage    = "rabbitmq:3.13-management"
	mosquittoImage = "eclipse-mosquitto:2.0"
)

// RabbitMQURL returns an AMQP 0-9-1 URL of a RabbitMQ to test against.
func RabbitMQURL(t testing.TB) string {
	t.Helper()
	if url := os.Getenv(EnvRabbitMQ); url != "" {
		return url
	}
	c := runContainer(t, EnvRabbitMQ, func(ctx context.Context) (testcontainers.Container, error) {
		return testcontainers.Run(ctx, rabbitImage,
			testcontainers.WithExposedPorts("5672/tcp"),
			testcontainers.WithWaitStrategy(wait.ForLog("Server startup complete").WithStartupTimeout(time.Minute)),
		)
	})
	hostPort, err := c.PortEndpoint(context.Background(), "5672/tcp", "")
	if err != nil {
		t.Fatalf("rabbitmq container endpoint: %v", err)
	}
	return "amqp://guest:guest@" + hostPort + "/"
}

// RabbitMQChannel dials the broker at url and opens a channel, for a test
// that declares, fills or reads queues itself; the connection closes when
// the test ends.
func RabbitMQChannel(t testing.TB, url string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("rabbitmq: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("rabbitmq channel: %v", err)
	}
	return ch
}

// MQTTURL returns the URL of an MQTT v5 broker to test against.
func MQTTURL(t testing.TB) string {
	t.Helper()
	if url := os.Getenv(EnvMQTT); url != "" {
		return url
	}
	c := runContainer(t, EnvMQTT, func(ctx context.Context) (testcontainers.Container, error) {
		return testcontainers.Run(ctx, mosquittoImage,
			testcontainers.WithExposedPorts("1883/tcp"),
			testcontainers.WithFiles(testcontainers.ContainerFile{
				Reader:            mosquittoConf(),
				ContainerFilePath: "/mosquitto/config/mosquitto.conf",
				FileMode:          0o644,
			}),
			testcontainers.WithWaitStrategy(wait.ForListeningPort("1883/tcp")),
		)
	})
	endpoint, err := c.PortEndpoint(context.Background(), "1883/tcp", "mqtt")
	if err != nil {
		t.Fatalf("mosquitto container endpoint: %v", err)
	}
	return endpoint
}

// runContainer starts a container or skips the test when no Docker engine
// answers.
func runContainer(t testing.TB, env string, run func(context.Context) (testcontainers.Container, error)) testcontainers.Container {
	t.Helper()
	if testing.Short() {
		t.Skipf("short mode: set %s to run against a broker", env)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := dockerAvailable(ctx); err != nil {
		t.Skipf("no broker: set %s, or run a Docker engine for testcontainers (%v)", env, err)
	}
	c, err := run(ctx)
	if err != nil {
		t.Fatalf("start container for %s: %v", env, err)
	}
	t.Cleanup(func() { _ = testcontainers.TerminateContainer(c) })
	return c
}

func dockerAvailable(ctx context.Context) (err error) {
	defer func() {
		// testcontainers panics when it finds no Docker host at all.
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return err
	}
	defer provider.Close()
	return provider.Health(ctx)
}

// AMQP1Addr returns the host:port of an AMQP 1.0 broker (RabbitMQ with the
// rabbitmq_amqp1_0 plugin) to test against, or skips: no container image
// ships that plugin enabled.
func AMQP1Addr(t testing.TB) string {
	t.Helper()
	if addr := os.Getenv(EnvAMQP1); addr != "" {
		return addr
	}
	t.Skipf("no AMQP 1.0 broker: set %s, e.g. 127.0.0.1:5672 with rabbitmq_amqp1_0 enabled", EnvAMQP1)
	return ""
}
