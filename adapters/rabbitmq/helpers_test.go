package rabbitmq_test

import (
	"context"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
	"github.com/hexmill/hexmill/integration"
)

// cutCommand is the first argument that turns the test binary into the
// "restart the broker" command of watermill's TestReconnect: it asks the
// test's control listener (the second argument) to cut the proxy and waits
// until the proxy forwards again.
const cutCommand = "hexmill-rabbitmq-cut"

func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == cutCommand {
		conn, err := net.Dial("tcp", os.Args[2])
		if err != nil {
			os.Exit(1)
		}
		_, _ = io.Copy(io.Discard, conn) // the test closes it once the outage is over
		os.Exit(0)
	}
	// Every goroutine of the adapter has an owner that waits for it:
	// none may outlive the tests. (watermill's TestReconnect never closes
	// the channel its collector goroutine reads: that one is upstream's.)
	goleak.VerifyTestMain(integration.WithBrokers(m), goleak.IgnoreTopFunction("github.com/ThreeDotsLabs/watermill/pubsub/tests.TestReconnect.func2"))
}

// brokerURL is the shared broker's URL; the test is skipped without one.
func brokerURL(t testing.TB) string {
	t.Helper()
	return integration.RabbitMQURL(t)
}

// brokerAddr is host:port of the shared broker.
func brokerAddr(t testing.TB) string {
	u := brokerURL(t)
	rest := u[strings.Index(u, "://")+3:]
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[i+1:]
	}
	if i := strings.Index(rest, "/"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// viaProxy rewrites the broker URL to go through addr.
func viaProxy(t testing.TB, addr string) string {
	u := brokerURL(t)
	return strings.Replace(u, brokerAddr(t), addr, 1)
}

// uniqueName is a queue or exchange name no other test uses.
func uniqueName(prefix string) string {
	return "hexmill.test." + prefix + "." + watermill.NewShortUUID()
}

// newClient connects a client with cfg (URL defaulted to the broker) and
// closes it when the test ends.
func newClient(t testing.TB, cfg rabbitmq.Config) *rabbitmq.Transport {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = rabbitmq.URL(brokerURL(t))
	}
	if cfg.Reconnect.InitialInterval == 0 {
		cfg.Reconnect.InitialInterval = 50 * time.Millisecond
		cfg.Reconnect.MaxInterval = time.Second
	}
	c, err := rabbitmq.New(cfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// admin is a raw connection for arranging and inspecting the broker;
// it deletes the named queues and exchanges when the test ends.
type admin struct {
	t    testing.TB
	conn *amqp.Connection
}

func newAdmin(t testing.TB) *admin {
	t.Helper()
	conn, err := amqp.Dial(brokerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	a := &admin{t: t, conn: conn}
	t.Cleanup(func() { _ = conn.Close() })
	return a
}

// cleanup deletes queues and exchanges when the test ends.
func (a *admin) cleanup(queues, exchanges []string) {
	a.t.Cleanup(func() {
		ch, err := a.conn.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, q := range queues {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		for _, e := range exchanges {
			_ = ch.ExchangeDelete(e, false, false)
		}
	})
}

// depth is the number of ready messages in queue.
func (a *admin) depth(queue string) int {
	a.t.Helper()
	ch, err := a.conn.Channel()
	if err != nil {
		a.t.Fatal(err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		a.t.Fatalf("inspect queue %s: %v", queue, err)
	}
	return q.Messages
}

// get takes one message from queue and acks it, failing the test when the
// queue stays empty for the timeout; the rest stay in the queue.
func (a *admin) get(queue string, timeout time.Duration) amqp.Delivery {
	a.t.Helper()
	ch, err := a.conn.Channel()
	if err != nil {
		a.t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Qos(1, 0, false); err != nil {
		a.t.Fatal(err)
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		if err := d.Ack(false); err != nil {
			a.t.Fatal(err)
		}
		return d
	case <-time.After(timeout):
		a.t.Fatalf("no message in %s within %s", queue, timeout)
	}
	return amqp.Delivery{}
}

func ptr[T any](v T) *T { return &v }
