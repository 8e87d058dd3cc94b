package integration_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/load"
)

// e2eReconnectMax is transports.mqtt.reconnect_max in the configuration
// the end-to-end tests write (e2eEnv.config).
const e2eReconnectMax = time.Second

// Two MQTT brokers that share no state, the service given both
// (servers: [A, B]); A killed for good mid-stream (SIGKILL, never
// restarted). The service must be connected to B, with every subscription
// made again there (the telemetry $share group, a plain subscription, the
// publisher connection), within reconnect_max, and handle everything the
// devices publish to B from then on. What A had taken and not delivered
// (its queue for the service's session, the messages in flight to the
// service and not acknowledged) dies with A: the test counts it as
// stranded, and docs/mqtt.md says why.
func TestE2EMQTTFailover(t *testing.T) {
	e := newE2EEnv(t)
	a := e.mosquitto
	b := integration.StartMosquitto(t, "")
	// servers: [mqtt://A, mqtt://B] in the service's configuration.
	e.mqttAddr = a.Addr() + ", mqtt://" + b.Addr()
	// A plain subscription next to the $share one, and an MQTT publisher
	// connection: readiness then needs all three on B.
	e.extraHandlers = `  device-status:
    transport: mqtt
    topic: e2e/` + e.run + `/+/status
`
	e.extraEvents = `  DeviceStatusChanged:
    transport: mqtt
    topic: e2e/` + e.run + `/status-changed
`
	sc := e2eScale(scale{Count: 2000, Rate: 1000}, scale{Count: 60000, Rate: 5000})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute+2*time.Duration(sc.Count)*time.Millisecond)
	defer cancel()
	// What A strands never comes: its checker stops waiting 3 s after the
	// last of A's messages arrived, which is long over once B's stream ran.
	chkA := e.checker(3 * time.Second)
	svc := e.startService("r0")

	// Devices publish to A until it dies.
	toA, stopA := context.WithCancel(ctx)
	defer stopA()
	sendingA := e.sendAsync(toA, sc)
	if err := chkA.AwaitReceived(ctx, sc.Count/2); err != nil {
		t.Fatal(err)
	}
	killedAt := chkA.Received()
	killing := time.Now()
	a.Kill()
	// A is dead once Kill returns (a process reaped, a container stopped,
	// which takes the Docker engine a moment): the failover is timed from
	// there.
	killed := time.Now()
	stopA() // A's devices give up on it: a publish to a dead broker never completes
	// Each of the service's three connections logs the server it is up
	// with; the last of them on B, then /readyz (every subscription
	// acknowledged by B), is when the service has resumed.
	connected := time.Duration(math.MinInt64)
	for range 3 {
		line := svc.WaitLog(t, "MQTT connected to B", func(l map[string]any) bool {
			return l["msg"] == "MQTT connected" && l["server"] == b.URL()
		})
		if at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(line["time"])); err == nil {
			connected = max(connected, at.Sub(killed)) // < 0: up on B before the kill returned
		}
		if line["session_present"] != false {
			t.Errorf("%v: B says it has a session for it, which it cannot", line["client_id"])
		}
	}
	awaitReadyz(t, ctx, svc, true)
	resumed := time.Since(killed)
	onB := connected.Round(time.Millisecond).String() + " after it"
	if connected < 0 {
		onB = "before it returned"
	}
	t.Logf("broker A killed at %d received (the kill took %s): the service's connections were up on B %s, /readyz ready %s after it",
		killedAt, killed.Sub(killing).Round(time.Millisecond), onB, resumed.Round(time.Millisecond))
	if resumed > e2eReconnectMax {
		t.Errorf("ready on broker B %s after the kill, later than reconnect_max (%s)", resumed.Round(time.Millisecond), e2eReconnectMax)
	}
	probeB(t, ctx, b.Addr(), e.run)
	var outA sendOutcome
	select {
	case outA = <-sendingA:
	case <-ctx.Done():
		t.Fatal("the generator publishing to A did not stop")
	}

	// Devices now publish to B: every message must be handled.
	runB := load.NewRunID()
	chkB, err := load.NewChecker(ctx, load.CheckConfig{
		URL: e.rabbitURL, Queue: e.sinkQueue + "-b", Exchange: e.exchange, BindingKey: "AlertRaised",
		RunID: runB, QuietTimeout: 15 * time.Second, DeleteQueue: true,
	})
	if err != nil {
		t.Fatalf("checker for B: %v", err)
	}
	t.Cleanup(func() { _ = chkB.Close() })
	sendingB := sendAsyncTo(t, ctx, load.SendConfig{
		Transport: load.MQTT, URL: b.URL(), RunID: runB, Count: sc.Count, Rate: sc.Rate,
		Publishers: 4, Devices: 8, ClientIDPrefix: "e2e-load-b",
	})
	reportB := finish(t, ctx, chkB, sendingB)
	svc.requireReady(t)

	reportA, err := chkA.Wait(ctx, outA.sent)
	if err != nil {
		t.Fatalf("checker for A: %v", err)
	}
	t.Logf("A: %d confirmed by A, %d handled, %d stranded on A (PUBACKed by A, never delivered before it died), %d duplicated",
		reportA.Sent, reportA.Received, reportA.Lost, reportA.Duplicated)
	t.Logf("B: %d sent, %d handled, 0 lost, %d duplicated; latency p50 %s max %s",
		reportB.Sent, reportB.Received, reportB.Duplicated, reportB.LatencyP50, reportB.LatencyMax)
	if n := svc.CountLog(integration.MsgIs("MQTT connect attempt failed; retrying")); n > 0 {
		t.Logf("the service logged %d failed connection attempts to A", n)
	}
}

// sendAsyncTo runs the generator with cfg in a goroutine the test owns;
// the result comes on the returned channel (buffered: the goroutine never
// blocks).
func sendAsyncTo(t *testing.T, ctx context.Context, cfg load.SendConfig) <-chan sendOutcome {
	out := make(chan sendOutcome, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r, err := load.Send(ctx, cfg)
		out <- sendOutcome{r, err}
	}()
	t.Cleanup(wg.Wait)
	return out
}

// probeB publishes a status report to broker B on the plain subscription
// (device-status) and waits for the DeviceStatusChanged it makes the
// service publish over MQTT: both the subscriber and the publisher
// connection work on B.
func probeB(t *testing.T, ctx context.Context, addr, run string) {
	t.Helper()
	changed := make(chan *paho.Publish, 1)
	sub := rawMQTTClientWith(t, ctx, addr, "e2e-probe-sub-"+run, func(pr paho.PublishReceived) (bool, error) {
		select {
		case changed <- pr.Packet:
		default:
		}
		return true, nil
	})
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "e2e/" + run + "/status-changed", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe on B: %v", err)
	}
	pub := rawMQTTClient(t, ctx, addr, "e2e-probe-pub-"+run)
	payload := fmt.Sprintf(`{"device_id":"probe-%s","status":"online","at":%q}`, run, time.Now().UTC().Format(time.RFC3339Nano))
	resp, err := pub.Publish(ctx, &paho.Publish{Topic: "e2e/" + run + "/probe/status", QoS: 1, Payload: []byte(payload)})
	if err != nil {
		t.Fatalf("status report to B: %v", err)
	}
	if resp.ReasonCode != 0 {
		t.Fatalf("status report to B: reason code %#x: the plain subscription is not on B", resp.ReasonCode)
	}
	select {
	case p := <-changed:
		t.Logf("B: the service handled a report on its plain subscription and published %s", p.Payload)
	case <-time.After(30 * time.Second):
		t.Fatal("no DeviceStatusChanged on B 30 s after a status report to B: the service's MQTT publisher is not on B")
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
}

// rawMQTTClientWith is rawMQTTClient with a handler of the messages its
// subscriptions receive.
func rawMQTTClientWith(t *testing.T, ctx context.Context, addr, clientID string, onPublish func(paho.PublishReceived) (bool, error)) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: clientID, Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){onPublish}})
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30})
	if err != nil {
		t.Fatalf("connect %s: %v", clientID, err)
	}
	if ca.ReasonCode != 0 {
		t.Fatalf("connect %s: reason %#x", clientID, ca.ReasonCode)
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		select {
		case <-c.Done():
		case <-ctx.Done():
		}
	})
	return c
}
