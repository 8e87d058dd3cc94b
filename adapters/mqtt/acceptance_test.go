package mqtt_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/ports"
)

// sharedConfig is a test configuration on the shared broker, with short
// sessions so that nothing lingers there.
func sharedConfig(t *testing.T, name string) mqtt.Config {
	cfg := testConfig(t, integration.MQTTURL(t), name)
	cfg.SessionExpiry = 30 * time.Second
	return cfg
}

// collector drains a subscription, acking everything, and counts.
type collector struct {
	mu     sync.Mutex
	ids    map[string]int
	topics map[string]string // uuid -> metadata topic
	more   chan struct{}
	wg     sync.WaitGroup
}

func collect(t *testing.T, out <-chan *message.Message) *collector {
	c := &collector{ids: map[string]int{}, topics: map[string]string{}, more: make(chan struct{}, 1)}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for m := range out {
			c.mu.Lock()
			c.ids[m.UUID]++
			c.topics[m.UUID] = m.Metadata.Get(ports.MetadataTopic)
			c.mu.Unlock()
			m.Ack()
			select {
			case c.more <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(c.wg.Wait)
	return c
}

func (c *collector) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.ids))
	for k, v := range c.ids {
		out[k] = v
	}
	return out
}

// await waits until cond holds on the collectors' counts.
func await(t *testing.T, what string, cond func() bool, cs ...*collector) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for !cond() {
		select {
		case <-cs[0].more:
		case <-time.After(50 * time.Millisecond): // another collector moved
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// $share: two members of group g split the messages of a multi-level
// filter, another group and a plain subscriber get them all, and a
// publisher we did not write (mosquitto_pub) reaches the group.
func TestSharedSubscriptionSplit(t *testing.T) {
	cfg := sharedConfig(t, "")
	run := "hx-" + watermill.NewShortUUID()
	filter := run + "/tele/+/data"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	subscribe := func(handler, group string) *collector {
		s := newSubscriber(t, cfg, mqtt.SubscriberConfig{Handler: handler, Group: group, Concurrency: 16})
		out, err := s.Subscribe(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		return collect(t, out)
	}
	a, b := subscribe("g-a", "g"), subscribe("g-b", "g")
	other := subscribe("g2", "g2")
	plain := subscribe("plain", "")

	pub := newPublisher(t, cfg)
	want := map[string]string{}
	for i := range 100 {
		m := message.NewMessage(watermill.NewUUID(), []byte(fmt.Sprint(i)))
		topic := fmt.Sprintf("%s/tele/dev%d/data", run, i%7)
		want[m.UUID] = topic
		if err := pub.Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
	count := func(c *collector) int { return len(c.snapshot()) }
	await(t, "100 messages in each of group g, group g2 and the plain subscriber", func() bool {
		return count(a)+count(b) >= 100 && count(other) >= 100 && count(plain) >= 100
	}, a, b, other, plain)

	sa, sb := a.snapshot(), b.snapshot()
	if len(sa) == 0 || len(sb) == 0 {
		t.Errorf("group g did not split: %d and %d", len(sa), len(sb))
	}
	for id := range sa {
		if sb[id] > 0 {
			t.Errorf("message %s reached both members of group g", id)
		}
	}
	for id, topic := range want {
		if sa[id]+sb[id] != 1 {
			t.Errorf("message %s reached group g %d times", id, sa[id]+sb[id])
		}
		for name, c := range map[string]*collector{"g2": other, "plain": plain} {
			c.mu.Lock()
			got, seen := c.topics[id], c.ids[id]
			c.mu.Unlock()
			if seen == 0 {
				t.Errorf("%s lost message %s", name, id)
			} else if got != topic {
				t.Errorf("%s: metadata topic %q, want the concrete topic %q", name, got, topic)
			}
		}
	}

	// A client we did not write publishes to the plain topic.
	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		t.Skip("no mosquitto_pub")
	}
	u := strings.TrimPrefix(cfg.Servers[0], "mqtt://")
	host, port, _ := strings.Cut(u, ":")
	topic := run + "/tele/from-mosquitto-pub/data"
	cmd := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-V", "mqttv5", "-q", "1", "-t", topic, "-m", "hello")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
	hasTopic := func(c *collector) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, tp := range c.topics {
			if tp == topic {
				return true
			}
		}
		return false
	}
	await(t, "the mosquitto_pub message in group g", func() bool { return hasTopic(a) || hasTopic(b) }, a, b)
	if hasTopic(a) && hasTopic(b) {
		t.Error("the mosquitto_pub message reached both members of group g")
	}
}

const crashChildEnv = "HEXMILL_MQTT_CRASH_CHILD"

// A subscriber process killed with SIGKILL while holding unacked QoS 1
// messages gets them again when it starts with the same client ID.
func TestCrashRedelivery(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	cfg := sharedConfig(t, "crash")
	topic := "hx-" + watermill.NewShortUUID() + "/crash"

	child := exec.Command(os.Args[0], "-test.run=^TestCrashRedelivery$", "-test.count=1")
	child.Env = append(os.Environ(), crashChildEnv+"=1", "CRASH_URL="+cfg.Servers[0], "CRASH_ID="+cfg.ClientID, "CRASH_TOPIC="+topic)
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = child.Process.Kill()
			_ = child.Wait()
		}
	}()
	lines := bufio.NewScanner(stdout)
	expect := func(prefix string) string {
		t.Helper()
		for lines.Scan() {
			if l := lines.Text(); strings.HasPrefix(l, prefix) {
				return strings.TrimPrefix(l, prefix)
			}
		}
		t.Fatalf("child ended before %q: %v", prefix, lines.Err())
		return ""
	}
	expect("subscribed")

	pub := newPublisher(t, cfg)
	sent := map[string]bool{}
	for i := range 5 {
		m := message.NewMessage(watermill.NewUUID(), []byte(fmt.Sprint(i)))
		sent[m.UUID] = true
		if err := pub.Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		if id := expect("got "); !sent[id] {
			t.Fatalf("child got %s, not one of ours", id)
		}
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	killed = true

	sub := newSubscriber(t, cfg, mqtt.SubscriberConfig{Handler: "crash", Concurrency: 8})
	out, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range receive(t, out, 5, 15*time.Second) {
		if !sent[m.UUID] {
			t.Errorf("got %s, not one of ours", m.UUID)
		}
		delete(sent, m.UUID)
	}
	if len(sent) > 0 {
		t.Errorf("not redelivered after the crash: %v", sent)
	}
}

// crashChild subscribes, reports what it gets without acking, and waits to
// be killed.
func crashChild() {
	cfg := mqtt.Config{
		Servers: []string{os.Getenv("CRASH_URL")}, ClientID: os.Getenv("CRASH_ID"),
		SessionExpiry: 30 * time.Second, ReconnectMin: 20 * time.Millisecond,
	}
	sub, err := mqtt.NewSubscriber(cfg, mqtt.SubscriberConfig{Handler: "crash", Concurrency: 8}, watermill.NopLogger{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	out, err := sub.Subscribe(context.Background(), os.Getenv("CRASH_TOPIC"))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("subscribed")
	for m := range out {
		fmt.Println("got " + m.UUID) // never acked
	}
}

// A nacked message is handed out again by the same connection, nacked
// through Nack or through its transport.Settler.
func TestNackRedeliveredWithoutReconnect(t *testing.T) {
	for _, byConsumer := range []bool{false, true} {
		t.Run(fmt.Sprintf("ByConsumer=%v", byConsumer), func(t *testing.T) {
			testNackRedeliveredWithoutReconnect(t, byConsumer)
		})
	}
}

func testNackRedeliveredWithoutReconnect(t *testing.T, byConsumer bool) {
	cfg := sharedConfig(t, "")
	topic := "hx-" + watermill.NewShortUUID() + "/nack"
	sub := newSubscriber(t, cfg, mqtt.SubscriberConfig{Concurrency: 4})
	out, err := sub.Subscribe(subscribeContext(byConsumer), topic)
	if err != nil {
		t.Fatal(err)
	}
	sent := message.NewMessage(watermill.NewUUID(), []byte("x"))
	if err := newPublisher(t, cfg).Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; attempt <= 3; attempt++ {
		select {
		case m := <-out:
			if m.UUID != sent.UUID {
				t.Fatalf("attempt %d: got %s, want %s", attempt, m.UUID, sent.UUID)
			}
			acked := attempt == 3
			switch {
			case byConsumer:
				transport.SettlerFrom(m.Context()).Settle(acked)
			case acked:
				m.Ack()
			default:
				m.Nack()
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("attempt %d: the nacked message did not come back", attempt)
		}
	}
	if n := sub.Connections(); n != 1 {
		t.Errorf("%d connections: the redelivery went through a reconnect", n)
	}
}

// A handler slower than the keepalive does not drop the connection: paho's
// receive goroutine only queues, PINGREQ/PINGRESP go on.
func TestSlowHandlerKeepsConnection(t *testing.T) {
	cfg := sharedConfig(t, "")
	cfg.KeepAlive = time.Second
	topic := "hx-" + watermill.NewShortUUID() + "/slow"
	sub := newSubscriber(t, cfg, mqtt.SubscriberConfig{Concurrency: 2})
	out, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(t, cfg)
	if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("slow"))); err != nil {
		t.Fatal(err)
	}
	slow := <-out
	// Hold the message for 3.5 keepalives: a blocked receive loop would
	// miss PINGRESP and be disconnected after 1.5 keepalives.
	hold := time.NewTimer(3500 * time.Millisecond)
	if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("fast"))); err != nil {
		t.Fatal(err)
	}
	select {
	case fast := <-out:
		fast.Ack()
	case <-time.After(3 * time.Second):
		t.Fatal("a second message was not delivered while the first was being handled")
	}
	<-hold.C
	slow.Ack()
	if n := sub.Connections(); n != 1 {
		t.Errorf("%d connections: the slow handler dropped the connection", n)
	}
	if err := sub.Ready(); err != nil {
		t.Errorf("not ready after the slow handler: %v", err)
	}
}

// The broker's reason code comes back as the publish error.
func TestPublishBrokerRefusal(t *testing.T) {
	dir := t.TempDir()
	acl := dir + "/acl"
	if err := os.WriteFile(acl, []byte("topic readwrite allowed/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	broker := integration.StartMosquitto(t, "acl_file "+acl+"\n")
	cfg := testConfig(t, broker.URL(), "")
	pub := newPublisher(t, cfg)
	if err := pub.Publish("allowed/x", message.NewMessage(watermill.NewUUID(), nil)); err != nil {
		t.Fatalf("allowed topic: %v", err)
	}
	err := pub.Publish("denied/x", message.NewMessage(watermill.NewUUID(), nil))
	if err == nil || !strings.Contains(err.Error(), "0x87") {
		t.Fatalf("publish to a denied topic: %v, want the broker's 0x87 (not authorized)", err)
	}
}

// A QoS 1 publish no subscription matches: the broker answers 0x10 and
// drops the message. A mandatory binding says so; the default does not.
func TestPublishMandatory(t *testing.T) {
	cfg := sharedConfig(t, "")
	pub := newPublisher(t, cfg)
	topic := "hexmill-test/" + testClientID(t, "topic") + "/nobody"
	tests := []struct {
		options map[string]string
		want    error
	}{
		{nil, nil},
		{map[string]string{mqtt.OptionMandatory: "false"}, nil},
		{map[string]string{mqtt.OptionMandatory: "true"}, mqtt.ErrNoSubscribers},
	}
	for _, tt := range tests {
		p, err := pub.WithOptions(tt.options)
		if err != nil {
			t.Fatal(err)
		}
		err = p.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x")))
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("options %v: publish with no subscriber: %v, want %v", tt.options, err, tt.want)
		}
	}
	if _, err := pub.WithOptions(map[string]string{mqtt.OptionMandatory: "yes"}); err == nil || !strings.Contains(err.Error(), "mandatory") {
		t.Errorf(`option mandatory "yes": %v, want an error naming the option`, err)
	}
}

// Metadata, UUID, content type and correlation data survive the trip.
func TestMessageProperties(t *testing.T) {
	cfg := sharedConfig(t, "")
	topic := "hx-" + watermill.NewShortUUID() + "/props"
	sub := newSubscriber(t, cfg, mqtt.SubscriberConfig{Concurrency: 1})
	out, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	sent := message.NewMessage(watermill.NewUUID(), []byte(`{"t":1}`))
	sent.Metadata.Set("device", "42")
	sent.Metadata.Set(ports.MetadataContentType, "application/json")
	sent.Metadata.Set(ports.MetadataCorrelationID, "corr-1")
	pub, err := newPublisher(t, cfg).WithOptions(map[string]string{"qos": "2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	got := receive(t, out, 1, 10*time.Second)[0]
	if got.UUID != sent.UUID || string(got.Payload) != string(sent.Payload) {
		t.Errorf("got %s %q, want %s %q", got.UUID, got.Payload, sent.UUID, sent.Payload)
	}
	for k, v := range map[string]string{"device": "42", ports.MetadataContentType: "application/json", ports.MetadataCorrelationID: "corr-1", ports.MetadataTopic: topic} {
		if got.Metadata.Get(k) != v {
			t.Errorf("metadata %s = %q, want %q", k, got.Metadata.Get(k), v)
		}
	}
}

// Metadata that is not valid UTF-8 (say, a poisoned message from a sender
// that broke its protocol) is published with U+FFFD in place of the bad
// bytes: the broker accepts the publish and keeps the connection, where
// the raw bytes would make it close the connection.
func TestPublishInvalidUTF8Metadata(t *testing.T) {
	cfg := sharedConfig(t, "")
	topic := "hx-" + watermill.NewShortUUID() + "/utf8"
	sub := newSubscriber(t, cfg, mqtt.SubscriberConfig{Concurrency: 1})
	out, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(t, cfg)
	bad := message.NewMessage(watermill.NewUUID(), []byte("x"))
	bad.Metadata.Set("firmware", "v1\xff\xfe.2")
	bad.Metadata.Set("k\xc3", "ok")
	if err := pub.Publish(topic, bad); err != nil {
		t.Fatalf("publish with invalid UTF-8 metadata: %v", err)
	}
	next := message.NewMessage(watermill.NewUUID(), []byte("y"))
	if err := pub.Publish(topic, next); err != nil {
		t.Fatalf("the next publish on the same connection: %v", err)
	}
	got := receive(t, out, 2, 10*time.Second)
	if got[0].UUID != bad.UUID || got[1].UUID != next.UUID {
		t.Fatalf("received %s, %s, want %s, %s", got[0].UUID, got[1].UUID, bad.UUID, next.UUID)
	}
	for k, v := range map[string]string{"firmware": "v1\uFFFD.2", "k\uFFFD": "ok"} {
		if got[0].Metadata.Get(k) != v {
			t.Errorf("metadata %q = %q, want %q", k, got[0].Metadata.Get(k), v)
		}
	}
}
