package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/hexmill/hexmill/adapters/mqtt"
)

// EnvBenchMQTT points the MQTT cases at a broker instead of a private
// mosquitto. The broker must not drop queued messages (docs/mqtt.md): the
// shared development broker's max_queued_messages 1000 loses most of a
// burst while the publishers get their PUBACKs.
const EnvBenchMQTT = "HEXMILL_BENCH_MQTT_URL"

const mosquittoBin = "/usr/sbin/mosquitto"

// mqttReceiveMaximum is the Receive Maximum both sides announce.
const mqttReceiveMaximum = 65535

func init() {
	register(Case{
		Name:      "mqtt/qos1-end-to-end",
		Available: mqttAvailable,
		Raw: withBroker(func(ctx context.Context, opts Options, url string) (Result, error) {
			return rawMQTTEndToEnd(ctx, opts, url, false)
		}),
		// hexmill consumes as its runtime does: each message settled
		// through the transport.Settler in its context (docs/mqtt.md);
		// "hexmill, watermill Ack" is the subscriber used as a plain
		// watermill one, its Ack bridged onto the Settler by a goroutine
		// per message.
		Hexmill: withBroker(func(ctx context.Context, opts Options, url string) (Result, error) {
			return hexmillMQTTEndToEnd(ctx, opts, url, true)
		}),
		// raw+uuid is raw paho carrying what hexmill's messages carry on
		// the wire: the message UUID as the user property watermill_uuid
		// (docs/mqtt.md). paho.golang decodes every property string into
		// a fresh bytes.Buffer of at least 512 bytes, so the property costs
		// both sides CPU and garbage. Both raw sides use autopaho's own
		// connection; hexmill reads and writes through its buffered one
		// (docs/mqtt.md, "The connection").
		Baselines: map[string]Run{
			"raw+uuid": withBroker(func(ctx context.Context, opts Options, url string) (Result, error) {
				return rawMQTTEndToEnd(ctx, opts, url, true)
			}),
			"hexmill, watermill Ack": withBroker(func(ctx context.Context, opts Options, url string) (Result, error) {
				return hexmillMQTTEndToEnd(ctx, opts, url, false)
			}),
		},
	})
}

// mqttAvailable reports whether an MQTT case has a broker: EnvBenchMQTT,
// or mosquitto to start one.
func mqttAvailable(context.Context) error {
	if os.Getenv(EnvBenchMQTT) != "" {
		return nil
	}
	if _, err := os.Stat(mosquittoBin); err != nil {
		return fmt.Errorf("set %s or install mosquitto (%v)", EnvBenchMQTT, err)
	}
	return nil
}

// withBroker gives run a broker: EnvBenchMQTT, or a private mosquitto
// without queue limits started for this run and stopped after it.
func withBroker(run func(ctx context.Context, opts Options, url string) (Result, error)) Run {
	return func(ctx context.Context, opts Options) (Result, error) {
		if url := os.Getenv(EnvBenchMQTT); url != "" {
			return run(ctx, opts, url)
		}
		url, _, stop, err := startMosquitto()
		if err != nil {
			return Result{}, err
		}
		defer stop()
		return run(ctx, opts, url)
	}
}

// startMosquitto starts a private mosquitto without queue limits on a free
// port and returns its URL, its process ID and a function that stops it.
func startMosquitto() (string, int, func(), error) {
	dir, err := os.MkdirTemp("", "hexmill-bench-mosquitto")
	if err != nil {
		return "", 0, nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	conf := filepath.Join(dir, "mosquitto.conf")
	user := "root"
	if u := os.Getenv("USER"); u != "" {
		user = u
	}
	body := fmt.Sprintf("user %s\nallow_anonymous true\npersistence false\nmax_inflight_messages 0\nmax_queued_messages 0\nmax_queued_bytes 0\nlistener %d 127.0.0.1\n", user, port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command(mosquittoBin, "-c", conf)
	if err := cmd.Start(); err != nil {
		return "", 0, nil, fmt.Errorf("start mosquitto: %w", err)
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = os.RemoveAll(dir)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			return "mqtt://" + addr, cmd.Process.Pid, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", 0, nil, fmt.Errorf("mosquitto does not listen on %s", addr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// payload carries the publish time for the latency.
func mqttPayload(size int) []byte {
	b := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(b, uint64(time.Now().UnixNano()))
	return b
}

func sentAt(b []byte) time.Time {
	if len(b) < 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b)))
}

// e2e is the measurement both sides share: publishers publish, the
// handler records, and the run ends when every message was handled.
type e2e struct {
	n       int
	handled atomic.Int64
	done    chan struct{}
	mu      sync.Mutex
	lat     []time.Duration
}

func newE2E(n int) *e2e {
	return &e2e{n: n, done: make(chan struct{}), lat: make([]time.Duration, 0, n)}
}

func (e *e2e) handle(payload []byte) {
	d := time.Since(sentAt(payload))
	e.mu.Lock()
	e.lat = append(e.lat, d)
	e.mu.Unlock()
	if e.handled.Add(1) == int64(e.n) {
		close(e.done)
	}
}

func (e *e2e) publish(ctx context.Context, opts Options, publish func([]byte) error) (Result, error) {
	clk := startClock()
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		errs = make(chan error, opts.Publishers)
	)
	for range opts.Publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(opts.Messages) {
				if err := publish(mqttPayload(opts.Size)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return Result{}, err
	}
	select {
	case <-e.done:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	case <-time.After(time.Minute):
		return Result{}, fmt.Errorf("handled %d of %d messages", e.handled.Load(), opts.Messages)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return clk.result(opts.Messages, e.lat), nil
}

func benchTopic() string { return "bench/" + watermill.NewShortUUID() }

// rawMQTTEndToEnd: paho.golang autopaho, QoS 1, one publisher connection,
// a subscriber with a persistent session, Receive Maximum 65535 and manual
// acks sent after the handler (inline, on paho's goroutine).
//
// With uuid, each publish carries a new message UUID as the user property
// mqtt.PropertyUUID, as hexmill's publisher does.
func rawMQTTEndToEnd(ctx context.Context, opts Options, server string, uuid bool) (Result, error) {
	u, err := url.Parse(server)
	if err != nil {
		return Result{}, err
	}
	topic := benchTopic()
	e := newE2E(opts.Messages)
	rm := uint16(mqttReceiveMaximum)
	subUp := make(chan struct{})
	var once sync.Once
	sub, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, SessionExpiryInterval: 60,
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.ReceiveMaximum = &rm
			return cp, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) { once.Do(func() { close(subUp) }) },
		ClientConfig: paho.ClientConfig{
			ClientID:                   "bench-raw-sub-" + watermill.NewShortUUID(),
			EnableManualAcknowledgment: true,
			SendAcksInterval:           10 * time.Millisecond,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				e.handle(pr.Packet.Payload)
				return true, pr.Client.Ack(pr.Packet)
			}},
		},
	})
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = sub.Disconnect(context.Background()) }()
	<-subUp
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
		return Result{}, err
	}
	pub, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		ClientConfig: paho.ClientConfig{ClientID: "bench-raw-pub-" + watermill.NewShortUUID()},
	})
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = pub.Disconnect(context.Background()) }()
	if err := pub.AwaitConnection(ctx); err != nil {
		return Result{}, err
	}
	return e.publish(ctx, opts, func(payload []byte) error {
		p := &paho.Publish{Topic: topic, QoS: 1, Payload: payload}
		if uuid {
			p.Properties = &paho.PublishProperties{User: paho.UserProperties{{Key: mqtt.PropertyUUID, Value: watermill.NewUUID()}}}
		}
		resp, err := pub.Publish(ctx, p)
		if err == nil && resp != nil && resp.ReasonCode >= 0x80 {
			err = fmt.Errorf("reason code 0x%02x", resp.ReasonCode)
		}
		return err
	})
}

// hexmillMQTTEndToEnd: the adapter with the same settings; the handler
// acks each message as it takes it from the subscription.
func hexmillMQTTEndToEnd(ctx context.Context, opts Options, server string, byConsumer bool) (Result, error) {
	cfg := mqtt.Config{
		Servers: []string{server}, ClientID: "bench-hexmill-" + watermill.NewShortUUID() + "-{conn}",
		SessionExpiry: time.Minute, ReceiveMaximum: mqttReceiveMaximum, QoS: 1,
	}
	topic := benchTopic()
	e := newE2E(opts.Messages)
	sub, err := mqtt.NewSubscriber(cfg, mqtt.SubscriberConfig{Handler: "bench", Concurrency: 64}, nil)
	if err != nil {
		return Result{}, err
	}
	defer sub.Close()
	subCtx, stop := context.WithCancel(subscribeContext(ctx, byConsumer))
	defer stop()
	out, err := sub.Subscribe(subCtx, topic)
	if err != nil {
		return Result{}, err
	}
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for m := range out {
			e.handle(m.Payload)
			ack(m, byConsumer)
		}
	}()
	defer readers.Wait()
	defer stop()
	pub, err := mqtt.NewPublisher(cfg, nil)
	if err != nil {
		return Result{}, err
	}
	defer pub.Close()
	return e.publish(ctx, opts, func(payload []byte) error {
		return pub.Publish(topic, message.NewMessage(watermill.NewUUID(), payload))
	})
}
