// Package integration holds what integration tests share: the brokers to
// test against and fault injection.
//
// Each broker comes from an environment variable when it is set (CI, docker
// compose, staging), else from a container started with testcontainers-go
// where a Docker engine answers; otherwise the test is skipped with a message
// that says how to provide one.
//
// A test binary starts at most one RabbitMQ and one Mosquitto container,
// on first use, and shares them between its tests: tests isolate themselves
// by unique queue, exchange and topic names. The containers are removed
// when the tests end, which is why a package that uses them runs its tests
// through WithBrokers in its TestMain.
package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/mosquitto"
	"github.com/testcontainers/testcontainers-go/modules/rabbitmq"
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

// The images of the broker containers: the official ones, which
// .ci/docker-images.sh stands in for where no registry is reachable.
const (
	RabbitMQImage  = "rabbitmq:3.13-management"
	MosquittoImage = "eclipse-mosquitto:2.0"
)

// startTimeout bounds a broker container's start, image pull included.
const startTimeout = 3 * time.Minute

// Runner runs a package's tests: *testing.M, or what WithBrokers makes of it.
type Runner interface {
	Run() int
}

// WithBrokers returns m's tests run so that the broker containers they
// start are removed once they end. A package whose tests use RabbitMQURL,
// MQTTURL or AMQP1Addr runs them through it:
//
//	func TestMain(m *testing.M) { os.Exit(integration.WithBrokers(m).Run()) }
//
// or, with goleak, goleak.VerifyTestMain(integration.WithBrokers(m)).
func WithBrokers(m Runner) Runner {
	return brokersRunner{m}
}

type brokersRunner struct{ m Runner }

func (r brokersRunner) Run() int {
	shared.mu.Lock()
	shared.managed = true
	shared.mu.Unlock()
	code := r.m.Run()
	if err := shared.terminate(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: remove broker containers: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// shared holds the test binary's broker containers.
var shared sharedBrokers

type sharedBrokers struct {
	mu       sync.Mutex
	managed  bool // WithBrokers runs the tests: it removes the containers
	rabbit   *sharedContainer
	mqtt     *sharedContainer
	postgres *sharedContainer
}

// sharedContainer is one broker container started on first use; err is
// kept, so every test after a failed start fails the same way.
type sharedContainer struct {
	once     sync.Once
	ctr      testcontainers.Container
	endpoint string // host:port of the broker's main port
	err      error
	skip     string // why the tests skip: no Docker engine
}

func (s *sharedBrokers) get(t testing.TB, env string, slot **sharedContainer) *sharedContainer {
	t.Helper()
	if testing.Short() {
		t.Skipf("short mode: set %s to run against a broker", env)
	}
	s.mu.Lock()
	if !s.managed {
		s.mu.Unlock()
		t.Fatalf("no %s and no broker container: a test binary that starts containers must run its tests "+
			"through integration.WithBrokers in TestMain, which removes them at the end", env)
	}
	if *slot == nil {
		*slot = &sharedContainer{}
	}
	c := *slot
	s.mu.Unlock()
	return c
}

func (s *sharedBrokers) terminate() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, c := range []*sharedContainer{s.rabbit, s.mqtt, s.postgres} {
		if c != nil && c.ctr != nil {
			if err := testcontainers.TerminateContainer(c.ctr); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.rabbit, s.mqtt, s.postgres = nil, nil, nil
	return errors.Join(errs...)
}

// start runs the container once and returns its endpoint for port, or
// skips or fails the test.
func (c *sharedContainer) start(t testing.TB, env, port string, run func(context.Context) (testcontainers.Container, error)) string {
	t.Helper()
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if err := DockerAvailable(ctx); err != nil {
			c.skip = fmt.Sprintf("no broker: set %s, or run a Docker engine for testcontainers (%v)", env, err)
			return
		}
		c.ctr, c.err = run(ctx)
		if c.err != nil {
			c.err = containerError(env, c.err)
			return
		}
		c.endpoint, c.err = c.ctr.PortEndpoint(ctx, port, "")
	})
	if c.skip != "" {
		t.Skip(c.skip)
	}
	if c.err != nil {
		t.Fatal(c.err)
	}
	return c.endpoint
}

// containerError says why a broker container did not start, first the fix
// where it is known: a Docker engine that answers but cannot pull an image
// fails deep in testcontainers' reaper (Ryuk), which starts before any
// broker.
func containerError(env string, err error) error {
	if msg := strings.ToLower(err.Error()); strings.Contains(msg, "ryuk") || strings.Contains(msg, "reaper") {
		return fmt.Errorf("broker container for %s: testcontainers' reaper (Ryuk) did not start, often because its image cannot be pulled: "+
			"set TESTCONTAINERS_RYUK_DISABLED=true (the tests remove their containers themselves), or set %s; the error: %w", env, env, err)
	}
	return fmt.Errorf("broker container for %s (is its image pullable? set %s to use a broker of your own): %w", env, env, err)
}

// DockerAvailable reports why no Docker engine can run containers, or nil.
func DockerAvailable(ctx context.Context) (err error) {
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

// rabbitMQ returns host:port of the shared RabbitMQ container: AMQP 0-9-1
// and, through the rabbitmq_amqp1_0 plugin, AMQP 1.0 on the same port.
func rabbitMQ(t testing.TB, env string) string {
	t.Helper()
	c := shared.get(t, env, &shared.rabbit)
	return c.start(t, env, rabbitmq.DefaultAMQPPort, func(ctx context.Context) (testcontainers.Container, error) {
		ctr, err := rabbitmq.Run(ctx, RabbitMQImage,
			rabbitmq.WithAdminUsername("guest"), rabbitmq.WithAdminPassword("guest"),
			testcontainers.WithFiles(testcontainers.ContainerFile{
				Reader:            strings.NewReader("[rabbitmq_amqp1_0].\n"),
				ContainerFilePath: "/etc/rabbitmq/enabled_plugins",
				FileMode:          0o644,
			}),
		)
		if ctr == nil {
			return nil, err
		}
		return ctr, err
	})
}

// RabbitMQURL returns an AMQP 0-9-1 URL of a RabbitMQ to test against: the
// same broker on every call.
func RabbitMQURL(t testing.TB) string {
	t.Helper()
	if url := os.Getenv(EnvRabbitMQ); url != "" {
		return url
	}
	return "amqp://guest:guest@" + rabbitMQ(t, EnvRabbitMQ) + "/"
}

// AMQP1Addr returns the host:port of an AMQP 1.0 broker (RabbitMQ with the
// rabbitmq_amqp1_0 plugin) to test against: without EnvAMQP1, the
// RabbitMQ container RabbitMQURL returns.
func AMQP1Addr(t testing.TB) string {
	t.Helper()
	if addr := os.Getenv(EnvAMQP1); addr != "" {
		return addr
	}
	return rabbitMQ(t, EnvAMQP1)
}

// MQTTURL returns the URL of an MQTT v5 broker to test against: the same
// broker on every call.
func MQTTURL(t testing.TB) string {
	t.Helper()
	if url := os.Getenv(EnvMQTT); url != "" {
		return url
	}
	c := shared.get(t, EnvMQTT, &shared.mqtt)
	return "mqtt://" + c.start(t, EnvMQTT, "1883/tcp", func(ctx context.Context) (testcontainers.Container, error) {
		ctr, err := mosquitto.Run(ctx, MosquittoImage,
			testcontainers.WithFiles(testcontainers.ContainerFile{
				Reader:            strings.NewReader(mosquittoSharedConf),
				ContainerFilePath: "/mosquitto/config/mosquitto.conf",
				FileMode:          0o644,
			}),
		)
		if ctr == nil {
			return nil, err
		}
		return ctr, err
	})
}

// mosquittoSharedConf is the shared broker's configuration: no silent drops
// of queued QoS 1/2 messages (see docs/mqtt.md).
const mosquittoSharedConf = `listener 1883
allow_anonymous true
persistence false
` + MosquittoLimits

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
