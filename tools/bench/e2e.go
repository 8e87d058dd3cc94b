package bench

// The end-to-end case (issue 6, item 3): devices -> MQTT v5 QoS 1 ->
// service -> RabbitMQ with publisher confirms, measured at a sink queue.
//
//	hexmill: a real binary (integration/testservice/cmd/testservice, built
//	         without -race) as a process, its telemetry handler,
//	         AlertRaised to RabbitMQ;
//	raw:     the same pipeline written directly on paho.golang and
//	         amqp091-go in this process, with the same guarantees and the
//	         same output: shared subscription, persistent session, the
//	         same Receive Maximum and messages in flight, the MQTT ack
//	         only after RabbitMQ confirmed the alert, 8 long-lived
//	         confirm channels, and alerts that carry what hexmill's do
//	         (message_id, the incoming message's ID as correlation_id,
//	         the event type as type).
//
// Both sides get a fresh private mosquitto (no queue limits), the same
// generator (integration/load, 16 publishers x 64 in flight, as fast as
// PUBACKs come) and the same sink consumer, so the ratio is the cost of
// hexmill over hand-written client code. The hexmill side also reports
// the service's peak RSS (VmHWM), see Notes.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/integration/load"
)

// EnvBenchE2EInFlight overrides e2eInFlight.
const EnvBenchE2EInFlight = "HEXMILL_BENCH_E2E_INFLIGHT"

// e2eInFlight is how many messages both sides handle at once (the
// telemetry binding's concurrency; the raw pipeline's workers). Persistent
// messages are confirmed by RabbitMQ after its fsync, so throughput is
// about in-flight / confirm latency, and more in flight lowers RabbitMQ's
// CPU per message, as it confirms and syncs larger batches (docs/bench
// has the figures).
func e2eInFlight() int {
	if n, err := strconv.Atoi(os.Getenv(EnvBenchE2EInFlight)); err == nil && n > 0 {
		return n
	}
	return 1024
}

// e2eChannels is the number of confirm channels: the RabbitMQ adapter's
// default publish.channels.
const e2eChannels = 8

// e2eReceiveMaximum is the Receive Maximum both sides announce: enough to
// keep e2eInFlight() busy, small enough that a backlog waits in the
// broker, not in the service's memory. mosquitto 2.0 does not keep to it
// once acks flow (the raw side's process holds whatever it sends); the
// hexmill subscriber queues at most this many (docs/mqtt.md), which keeps
// the service's peak RSS near 50 MiB where it was ~120 MiB with ~33k
// messages of the generator's backlog in process. Twice the in-flight
// drained the backlog as fast as four times, with 50 MiB peak RSS, not 66.
func e2eReceiveMaximum() int { return max(2048, 2*e2eInFlight()) }

func init() {
	register(Case{
		Name:      "e2e/mqtt-service-rabbitmq",
		Available: e2eAvailable,
		Raw:       e2eSide("raw", rawPipeline),
		Hexmill:   e2eSide("hexmill", hexmillPipeline),
		// rabbitmq-only is the broker's ceiling for this pipeline: only
		// its last leg, persistent mandatory publishes with confirms to
		// a durable queue, with the same in-flight and channels.
		Baselines: map[string]Run{"rabbitmq-only": rabbitmqCeiling},
	})
}

// e2eAvailable checks for mosquitto's binary and RabbitMQ.
func e2eAvailable(context.Context) error {
	if _, err := os.Stat(mosquittoBin); err != nil {
		return fmt.Errorf("install mosquitto (%v)", err)
	}
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return fmt.Errorf("RabbitMQ at HEXMILL_TEST_RABBITMQ_URL: %v", err)
	}
	return conn.Close()
}

// e2eNames are one side's broker names.
type e2eNames struct {
	run, mqttURL, exchange, sinkQueue, poisonQueue, group string
}

func newE2ENames(mqttURL string) e2eNames {
	run := load.NewRunID()
	return e2eNames{
		run: run, mqttURL: mqttURL,
		exchange:    "bench-e2e-" + run + "-events",
		sinkQueue:   "bench-e2e-" + run + "-sink",
		poisonQueue: "bench-e2e-" + run + "-poison",
		group:       "bench-e2e-" + run,
	}
}

// e2eGenerate publishes the run's telemetry to mosquitto, as fast as
// PUBACKs come.
func e2eGenerate(ctx context.Context, n e2eNames, opts Options) (load.SendResult, error) {
	sent, err := load.Send(ctx, load.SendConfig{
		Transport: load.MQTT, URL: n.mqttURL, RunID: n.run, Count: opts.Messages,
		Publishers: opts.Publishers, Window: 64, Devices: 16, ClientIDPrefix: "bench-e2e",
	})
	if err != nil {
		return sent, fmt.Errorf("generator: %w", err)
	}
	return sent, nil
}

// brokerMeter measures RabbitMQ's CPU from now on, when it runs here.
func brokerMeter() cpuMeter {
	var cpu cpuMeter
	if isLoopback(rabbitURL()) {
		cpu.add("rabbitmq", pidOf("beam.smp"), false)
	}
	return cpu
}

// e2eStart gives one side a private mosquitto (and its process ID), the
// run's names and its sink queue; done removes them.
func e2eStart(opts Options) (n e2eNames, mosquittoPID int, sink *e2eSink, done func(), err error) {
	mqttURL, mosquittoPID, stopMosquitto, err := startMosquitto()
	if err != nil {
		return n, 0, nil, nil, err
	}
	n = newE2ENames(mqttURL)
	if sink, err = newE2ESink(n, opts.Messages); err != nil {
		stopMosquitto()
		return n, 0, nil, nil, err
	}
	return n, mosquittoPID, sink, func() {
		sink.close()
		stopMosquitto()
	}, nil
}

// pipeline starts the middle of the path and returns once it consumes;
// stop ends it and returns what it wants reported. pid is the process the
// pipeline runs in when that is not this one, 0 otherwise.
type pipeline func(ctx context.Context, n e2eNames) (stop func() string, pid int, err error)

// e2eSide runs one side: broker, sink, pipeline, generator.
func e2eSide(side string, start pipeline) Run {
	return func(ctx context.Context, opts Options) (res Result, err error) {
		n, mosquittoPID, sink, done, err := e2eStart(opts)
		if err != nil {
			return Result{}, err
		}
		defer done()
		if err := sink.consume(); err != nil {
			return Result{}, err
		}

		stop, pid, err := start(ctx, n)
		if err != nil {
			return Result{}, err
		}
		stopped := false
		var extra string
		defer func() {
			if !stopped {
				_ = stop()
			}
		}()

		cpu := brokerMeter()
		cpu.add("mosquitto", mosquittoPID, false)
		cpu.add("service", pid, true)
		self := "bench (generator, sink, pipeline)"
		if pid != 0 {
			self = "bench (generator, sink)"
		}
		cpu.add(self, os.Getpid(), true)
		sent, err := e2eGenerate(ctx, n, opts)
		if err != nil {
			return Result{}, err
		}
		res, lost, dup, err := sink.wait(ctx, sent.Started)
		perMessage, client := cpu.read(res.Messages)
		if perMessage != "" {
			extra = "; CPU per message: " + perMessage
		}
		res.CPU = client
		extra = stop() + extra
		stopped = true
		addNote("e2e/mqtt-service-rabbitmq %s: %d messages, %.0f msg/s end to end (generator %.0f msg/s), lost %d, duplicated %d%s",
			side, opts.Messages, res.Rate(), sent.Rate(), lost, dup, extra)
		if err != nil {
			return res, err
		}
		if lost > 0 {
			return res, fmt.Errorf("%d of %d messages lost", lost, opts.Messages)
		}
		return res, nil
	}
}

// e2eSink reads the alerts of one run from a queue bound to the events
// exchange and records the latency of each message's first delivery.
type e2eSink struct {
	n          e2eNames
	count      int
	conn       *amqp.Connection
	ch         *amqp.Channel
	deliveries <-chan amqp.Delivery
}

// sinkQueueArgs make the sink a classic queue of version 2, RabbitMQ
// 3.10's newer index and store (the default from 3.13): both pipelines
// drained a backlog ~10 % faster into it than into a version 1 queue.
var sinkQueueArgs = amqp.Table{"x-queue-version": 2}

func newE2ESink(n e2eNames, count int) (*e2eSink, error) {
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	s := &e2eSink{n: n, count: count, conn: conn, ch: ch}
	fail := func(err error) (*e2eSink, error) {
		s.close()
		return nil, err
	}
	if err := ch.ExchangeDeclare(n.exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fail(err)
	}
	if _, err := ch.QueueDeclare(n.sinkQueue, true, false, false, false, sinkQueueArgs); err != nil {
		return fail(err)
	}
	if _, err := ch.QueueDeclare(n.poisonQueue, true, false, false, false, nil); err != nil {
		return fail(err)
	}
	if err := ch.QueueBind(n.sinkQueue, "AlertRaised", n.exchange, false, nil); err != nil {
		return fail(err)
	}
	return s, nil
}

// consume starts reading the sink queue.
func (s *e2eSink) consume() error {
	if err := s.ch.Qos(2000, 0, false); err != nil {
		return err
	}
	var err error
	s.deliveries, err = s.ch.Consume(s.n.sinkQueue, "", false, true, false, false, nil)
	return err
}

// depth is how many messages the sink queue holds.
func (s *e2eSink) depth() (int, error) {
	q, err := s.ch.QueueDeclarePassive(s.n.sinkQueue, true, false, false, false, nil)
	return q.Messages, err
}

func (s *e2eSink) wait(ctx context.Context, started time.Time) (res Result, lost, dup int, err error) {
	seen := make([]bool, s.count)
	lat := make([]time.Duration, 0, s.count)
	prefix := load.DeviceID(s.n.run, 0)
	prefix = prefix[:len(prefix)-1]
	var last time.Time
	quiet := time.NewTimer(15 * time.Second)
	defer quiet.Stop()
	got := 0
	var acks load.BatchAcker
	for got < s.count {
		select {
		case d, ok := <-s.deliveries:
			if !ok {
				return res, s.count - got, dup, errors.New("sink: consumer closed")
			}
			now := time.Now()
			acks.Ack(d, len(s.deliveries))
			var a struct {
				DeviceID string    `json:"device_id"`
				Value    float64   `json:"value"`
				At       time.Time `json:"at"`
			}
			if json.Unmarshal(d.Body, &a) != nil || !strings.HasPrefix(a.DeviceID, prefix) {
				continue
			}
			i := int(a.Value)
			if i < 0 || i >= s.count {
				continue
			}
			if seen[i] {
				dup++
				continue
			}
			seen[i] = true
			got++
			last = now
			lat = append(lat, now.Sub(a.At))
			if !quiet.Stop() {
				<-quiet.C
			}
			quiet.Reset(15 * time.Second)
		case <-quiet.C:
			return Result{Messages: got, Elapsed: last.Sub(started), Latencies: lat}, s.count - got, dup, nil
		case <-ctx.Done():
			return Result{Messages: got, Elapsed: last.Sub(started), Latencies: lat}, s.count - got, dup, ctx.Err()
		}
	}
	return Result{Messages: got, Elapsed: last.Sub(started), Latencies: lat}, 0, dup, nil
}

func (s *e2eSink) close() {
	if s.ch != nil {
		_, _ = s.ch.QueueDelete(s.n.sinkQueue, false, false, false)
		_, _ = s.ch.QueueDelete(s.n.poisonQueue, false, false, false)
		_ = s.ch.ExchangeDelete(s.n.exchange, false, false)
	}
	_ = s.conn.Close()
}

// ---- hexmill: the real binary ----

var (
	hexmillBinOnce sync.Once
	hexmillBin     string
	hexmillBinErr  error
)

// testserviceCmd is the test service's command, built by its import path:
// the tools module's replace directive makes it the checkout's.
const testserviceCmd = "github.com/hexmill/hexmill/integration/testservice/cmd/testservice"

// buildHexmill builds testserviceCmd (without -race) once per process into
// a temporary directory; it needs the tools module (run from tools/).
func buildHexmill(ctx context.Context) (string, error) {
	hexmillBinOnce.Do(func() {
		out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		gomod := strings.TrimSpace(string(out))
		if err != nil || gomod == "" || gomod == os.DevNull {
			hexmillBinErr = fmt.Errorf("build hexmill: run from the tools module, tools/ in the hexmill repository (go env GOMOD: %q, %v)", gomod, err)
			return
		}
		dir, err := os.MkdirTemp("", "hexmill-bench-bin")
		if err != nil {
			hexmillBinErr = err
			return
		}
		bin := filepath.Join(dir, "hexmill")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, testserviceCmd)
		build.Dir = filepath.Dir(gomod)
		if out, err := build.CombinedOutput(); err != nil {
			hexmillBinErr = fmt.Errorf("build hexmill: %v\n%s", err, out)
			return
		}
		hexmillBin = bin
	})
	return hexmillBin, hexmillBinErr
}

func hexmillPipeline(ctx context.Context, n e2eNames) (func() string, int, error) {
	return startHexmill(ctx, n)
}

// tracedPipeline is hexmillPipeline with tracing on at sampling ratio
// sampling, exporting over OTLP/HTTP to a collector in this process that
// reads and drops what it is sent.
func tracedPipeline(sampling string) pipeline {
	return func(ctx context.Context, n e2eNames) (func() string, int, error) {
		collector, err := startOTLPSink()
		if err != nil {
			return nil, 0, err
		}
		stop, pid, err := startHexmill(ctx, n,
			"HEXMILL_TRACING_ENDPOINT=http://"+collector.addr,
			"HEXMILL_TRACING_PROTOCOL=http/protobuf",
			"HEXMILL_TRACING_SAMPLING="+sampling)
		if err != nil {
			collector.close()
			return nil, 0, err
		}
		return func() string {
			note := stop()
			collector.close()
			return note + fmt.Sprintf("; tracing sampling %s, %d OTLP export requests, %.1f MiB", sampling, collector.requests.Load(), float64(collector.bytes.Load())/(1<<20))
		}, pid, nil
	}
}

// otlpSink answers OTLP/HTTP export requests and keeps only their count
// and size.
type otlpSink struct {
	addr     string
	srv      *http.Server
	done     chan struct{}
	requests atomic.Int64
	bytes    atomic.Int64
}

func startOTLPSink() (*otlpSink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &otlpSink{addr: l.Addr().String(), done: make(chan struct{})}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		s.requests.Add(1)
		s.bytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse
	})}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(l)
	}()
	return s, nil
}

func (s *otlpSink) close() {
	_ = s.srv.Close()
	<-s.done
}

// startHexmill runs the service binary for the pipeline with env added.
func startHexmill(ctx context.Context, n e2eNames, env ...string) (func() string, int, error) {
	bin, err := buildHexmill(ctx)
	if err != nil {
		return nil, 0, err
	}
	u, _ := url.Parse(n.mqttURL)
	conf := fmt.Sprintf(`service: bench-e2e
http_addr: "off"
log:
  level: info
  format: json
poison:
  transport: rabbitmq
  topic: %[1]s
transports:
  mqtt:
    servers: [mqtt://%[2]s]
    client_id: bench-e2e-%[3]s-{conn}-{n}
    receive_maximum: %[8]d
  rabbitmq:
    url: %[4]s
handlers:
  telemetry:
    transport: mqtt
    topic: devices/+/telemetry
    group: %[5]s
    concurrency: %[7]d
    topic_params: devices/{device_id}/telemetry
events:
  AlertRaised:
    transport: rabbitmq
    topic: AlertRaised
    options:
      exchange: %[6]s
domain:
  thresholds:
    seq: -1
`, n.poisonQueue, u.Host, n.run, rabbitURL(), n.group, n.exchange, e2eInFlight(), e2eReceiveMaximum())
	dir, err := os.MkdirTemp("", "hexmill-bench-e2e")
	if err != nil {
		return nil, 0, err
	}
	path := filepath.Join(dir, "hexmill.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, 0, err
	}
	cmd := exec.Command(bin)
	cmd.Env = append(append(os.Environ(), "HEXMILL_CONFIG="+path), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, 0, err
	}
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, 0, err
	}
	// The log reader runs until the process's stderr closes; stop waits
	// for it.
	consuming := make(chan struct{})
	readDone := make(chan struct{})
	var errLines []string
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for sc.Scan() {
			var line struct{ Msg, Level string }
			if json.Unmarshal(sc.Bytes(), &line) != nil || line.Level == "ERROR" {
				if len(errLines) < 5 {
					errLines = append(errLines, sc.Text())
				}
			}
			if !signalled && line.Msg == "consuming" {
				signalled = true
				close(consuming)
			}
		}
	}()
	stop := func() string {
		rss := peakRSS(cmd.Process.Pid)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-readDone
		err := cmd.Wait()
		_ = os.RemoveAll(dir)
		note := fmt.Sprintf("; service peak RSS (VmHWM) %s", rss)
		if err != nil {
			note += fmt.Sprintf("; exit: %v", err)
		}
		if len(errLines) > 0 {
			note += fmt.Sprintf("; error lines: %q", errLines)
		}
		return note
	}
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case <-consuming:
		return stop, cmd.Process.Pid, nil
	case <-readDone:
		stop()
		return nil, 0, fmt.Errorf("hexmill exited at start: %q", errLines)
	case <-timer.C:
		return nil, 0, fmt.Errorf("hexmill not consuming within 30s%s", stop())
	case <-ctx.Done():
		stop()
		return nil, 0, ctx.Err()
	}
}

// peakRSS reads VmHWM from /proc/<pid>/status.
func peakRSS(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if kb, err := strconv.Atoi(f[0]); err == nil {
				return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
			}
		}
	}
	return "unknown"
}

// ---- raw: paho.golang -> amqp091-go, same guarantees ----

func rawPipeline(ctx context.Context, n e2eNames) (func() string, int, error) {
	u, err := url.Parse(n.mqttURL)
	if err != nil {
		return nil, 0, err
	}
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return nil, 0, err
	}
	channels := make([]*amqp.Channel, e2eChannels)
	for i := range channels {
		ch, err := conn.Channel()
		if err == nil {
			err = ch.Confirm(false)
		}
		if err != nil {
			_ = conn.Close()
			return nil, 0, err
		}
		channels[i] = ch
	}
	work := make(chan paho.PublishReceived, 65536)
	var cm *autopaho.ConnectionManager
	rm := uint16(e2eReceiveMaximum())
	topic := "$share/" + n.group + "/devices/+/telemetry"
	subscribed := make(chan error, 1)
	var once sync.Once
	lctx, cancel := context.WithCancel(context.Background())
	cm, err = autopaho.NewConnection(lctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, SessionExpiryInterval: 3600,
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.ReceiveMaximum = &rm
			return cp, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			_, err := cm.Subscribe(lctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
			once.Do(func() { subscribed <- err })
		},
		ClientConfig: paho.ClientConfig{
			ClientID:                   "bench-e2e-raw-" + n.run, // a restart resumes the session
			EnableManualAcknowledgment: true,
			SendAcksInterval:           10 * time.Millisecond,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				work <- pr // hand off: never block paho's reader
				return true, nil
			}},
		},
	})
	if err != nil {
		cancel()
		_ = conn.Close()
		return nil, 0, err
	}
	var wg sync.WaitGroup
	for w := range e2eInFlight() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := channels[w%len(channels)]
			for pr := range work {
				if err := rawHandle(lctx, ch, n.exchange, pr.Packet); err != nil {
					continue // left unacked: redelivered on the next session, like a nack
				}
				_ = pr.Client.Ack(pr.Packet)
			}
		}()
	}
	stop := func() string {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = cm.Disconnect(dctx)
		dcancel()
		cancel()
		<-cm.Done()
		close(work)
		wg.Wait()
		_ = conn.Close()
		return ""
	}
	select {
	case err := <-subscribed:
		if err != nil {
			stop()
			return nil, 0, err
		}
		return stop, 0, nil
	case <-ctx.Done():
		stop()
		return nil, 0, ctx.Err()
	}
}

// rawHandle is the sample telemetry handler written by hand: decode,
// raise an alert per reading above the threshold (-1 for seq), publish it
// persistent and mandatory, and wait for the confirm. The alert carries
// what hexmill's does: RabbitMQ's cost per message grows with the
// properties it stores (docs/reliability.md).
func rawHandle(ctx context.Context, ch *amqp.Channel, exchange string, p *paho.Publish) error {
	var t struct {
		DeviceID string             `json:"device_id"`
		Readings map[string]float64 `json:"readings"`
		At       time.Time          `json:"at"`
	}
	if err := json.Unmarshal(p.Payload, &t); err != nil {
		return err
	}
	id := ""
	if p.Properties != nil {
		id = p.Properties.User.Get(mqtt.PropertyUUID)
	}
	if id == "" {
		id = watermill.NewUUID() // as hexmill names a message from a publisher that is not watermill
	}
	for metric, v := range t.Readings {
		body, err := json.Marshal(struct {
			DeviceID  string    `json:"device_id"`
			Metric    string    `json:"metric"`
			Value     float64   `json:"value"`
			Threshold float64   `json:"threshold"`
			At        time.Time `json:"at"`
		}{t.DeviceID, metric, v, -1, t.At})
		if err != nil {
			return err
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, "AlertRaised", true, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, MessageId: watermill.NewUUID(), Body: body,
			CorrelationId: id, Type: "AlertRaised",
		})
		if err != nil {
			return err
		}
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("nacked")
		}
	}
	return nil
}

// ---- the broker's ceiling: RabbitMQ confirmed persistent publishes alone ----

func rabbitmqCeiling(ctx context.Context, opts Options) (Result, error) {
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	setup, err := conn.Channel()
	if err != nil {
		return Result{}, err
	}
	queue := "bench-e2e-ceiling-" + load.NewRunID()
	if _, err := setup.QueueDeclare(queue, true, false, false, false, sinkQueueArgs); err != nil {
		return Result{}, err
	}
	defer func() { _, _ = setup.QueueDelete(queue, false, false, false) }()
	channels := make([]*amqp.Channel, e2eChannels)
	for i := range channels {
		if channels[i], err = conn.Channel(); err == nil {
			err = channels[i].Confirm(false)
		}
		if err != nil {
			return Result{}, err
		}
	}
	body := []byte(`{"device_id":"bench-e2e-ceiling-device-00","metric":"seq","value":12345,"threshold":-1,"at":"2026-01-01T00:00:00.000000000Z"}`)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		lat   = make([]time.Duration, 0, opts.Messages)
		next  atomic.Int64
		first error
	)
	cpu := brokerMeter()
	clk := startClock()
	for w := range e2eInFlight() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := channels[w%len(channels)]
			for next.Add(1) <= int64(opts.Messages) {
				t0 := time.Now()
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp.Publishing{
					DeliveryMode: amqp.Persistent, MessageId: watermill.NewUUID(), Body: body,
					CorrelationId: watermill.NewUUID(), Type: "AlertRaised", // what the pipelines publish
				})
				if err == nil {
					var ok bool
					if ok, err = dc.WaitContext(ctx); err == nil && !ok {
						err = errors.New("nacked")
					}
				}
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				lat = append(lat, time.Since(t0))
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return Result{}, first
	}
	res := clk.result(opts.Messages, lat)
	if perMessage, _ := cpu.read(opts.Messages); perMessage != "" {
		addNote("e2e/mqtt-service-rabbitmq rabbitmq-only: %d persistent confirmed publishes, %.0f msg/s; broker CPU per message: %s", opts.Messages, res.Rate(), perMessage)
	}
	return res, nil
}
