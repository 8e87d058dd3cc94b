package integration

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// What a service's test sends to its handlers and reads from what they
// publish, over the brokers of RabbitMQURL, MQTTURL and AMQP1Addr, without
// a client of its own. Each call fails the test, naming the broker, when
// the broker does not take the message or has none to give.

// publishTimeout bounds each call.
const publishTimeout = 30 * time.Second

// PublishMQTT publishes payload to topic on the MQTT v5 broker at mqttURL
// (mqtt://host:port) at QoS 1, and returns once the broker acknowledged it.
func PublishMQTT(t testing.TB, mqttURL, topic string, payload []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	u, err := url.Parse(mqttURL)
	if err != nil {
		t.Fatalf("PublishMQTT: %v", err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		t.Fatalf("PublishMQTT: connect %s: %v", u.Redacted(), err)
	}
	defer conn.Close()
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	connect := &paho.Connect{ClientID: "hexmill-test-" + uniqueSuffix(), CleanStart: true, KeepAlive: 30}
	if u.User != nil {
		connect.Username, connect.UsernameFlag = u.User.Username(), true
		if p, ok := u.User.Password(); ok {
			connect.Password, connect.PasswordFlag = []byte(p), true
		}
	}
	if ca, err := c.Connect(ctx, connect); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("PublishMQTT: connect %s: %v %+v", u.Redacted(), err, ca)
	}
	defer func() { _ = c.Disconnect(&paho.Disconnect{}) }()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload}); err != nil {
		t.Fatalf("PublishMQTT: publish to %s on %s: %v", topic, u.Redacted(), err)
	}
}

// PublishRabbitMQ publishes body, persistent, to exchange with routing key
// on the RabbitMQ at rabbitURL, and returns once the broker confirmed it.
// The default exchange "" routes to the queue named key.
func PublishRabbitMQ(t testing.TB, rabbitURL, exchange, key string, body []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	ch := RabbitMQChannel(t, rabbitURL)
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("PublishRabbitMQ: confirm mode: %v", err)
	}
	conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: body})
	if err != nil {
		t.Fatalf("PublishRabbitMQ: publish to exchange %q, key %q: %v", exchange, key, err)
	}
	if ok, err := conf.WaitContext(ctx); err != nil || !ok {
		t.Fatalf("PublishRabbitMQ: exchange %q, key %q: the broker did not confirm (%v)", exchange, key, err)
	}
}

// PublishAMQP1 sends body to address (on RabbitMQ 3.x's AMQP 1.0 plugin,
// /amq/queue/<name> or /exchange/<name>/<key>; /queues/<name> on 4.x) over AMQP 1.0
// to the broker at addr (host:port, as AMQP1Addr returns; guest/guest),
// and returns once the broker accepted it.
func PublishAMQP1(t testing.TB, addr, address string, body []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@"+addr, &amqp.ConnOptions{ContainerID: "hexmill-test-" + uniqueSuffix()})
	if err != nil {
		t.Fatalf("PublishAMQP1: connect %s: %v", addr, err)
	}
	defer conn.Close() // bounded by its own timeout
	session, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatalf("PublishAMQP1: session: %v", err)
	}
	sender, err := session.NewSender(ctx, address, nil)
	if err != nil {
		t.Fatalf("PublishAMQP1: sender to %s: %v", address, err)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		_ = sender.Close(cctx)
	}()
	if err := sender.Send(ctx, &amqp.Message{Header: &amqp.MessageHeader{Durable: true}, Data: [][]byte{body}}, nil); err != nil {
		t.Fatalf("PublishAMQP1: send to %s: %v", address, err)
	}
}

// ReadRabbitMQ takes the next message off queue on the RabbitMQ at
// rabbitURL, waiting up to timeout for one, and returns its body.
func ReadRabbitMQ(t testing.TB, rabbitURL, queue string, timeout time.Duration) []byte {
	t.Helper()
	ch := RabbitMQChannel(t, rabbitURL)
	deadline := time.Now().Add(timeout)
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			var ae *amqp091.Error
			if errors.As(err, &ae) && ae.Code == amqp091.NotFound {
				t.Fatalf("ReadRabbitMQ: no queue %q: declare it (the service's transports.rabbitmq.queues, or the test)", queue)
			}
			t.Fatalf("ReadRabbitMQ: get from %q: %v", queue, err)
		}
		if ok {
			return d.Body
		}
		if time.Now().After(deadline) {
			t.Fatalf("ReadRabbitMQ: no message on %q within %s", queue, timeout)
		}
		time.Sleep(20 * time.Millisecond) // basic.get cannot wait
	}
}

// uniqueSuffix keeps client IDs of concurrent tests apart.
func uniqueSuffix() string { return rand.Text()[:12] }
