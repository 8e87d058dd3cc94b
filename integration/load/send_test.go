package load

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp1 "github.com/Azure/go-amqp"
	wmessage "github.com/ThreeDotsLabs/watermill/message"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/hexmill/hexmill/adapters/aliyun"
	"github.com/hexmill/hexmill/integration"
)

// seqChecker collects the sequence numbers of a run and checks each
// exactly once.
type seqChecker struct {
	t     *testing.T
	count int
	seen  []int
	start time.Time
}

func newSeqChecker(t *testing.T, count int) *seqChecker {
	return &seqChecker{t: t, count: count, seen: make([]int, count), start: time.Now()}
}

// telemetry checks a telemetry payload of run and records its number.
func (s *seqChecker) telemetry(run string, body []byte) int {
	s.t.Helper()
	var tel serviceTelemetry
	if err := json.Unmarshal(body, &tel); err != nil {
		s.t.Fatalf("telemetry %s: %v", body, err)
	}
	n, ok := tel.Readings[Metric]
	if !ok || len(tel.Readings) != 1 {
		s.t.Fatalf("readings %v, want only %s", tel.Readings, Metric)
	}
	seq := int(n)
	s.record(seq, tel.At)
	if want := DeviceID(run, seq%4); tel.DeviceID != want {
		s.t.Errorf("message %d from %q, want %q", seq, tel.DeviceID, want)
	}
	return seq
}

func (s *seqChecker) record(seq int, at time.Time) {
	s.t.Helper()
	if seq < 0 || seq >= s.count {
		s.t.Fatalf("sequence number %d out of 0..%d", seq, s.count-1)
	}
	s.seen[seq]++
	if at.Before(s.start.Add(-time.Second)) || at.After(time.Now()) {
		s.t.Errorf("message %d at %v, not during the test", seq, at)
	}
}

func (s *seqChecker) done() {
	s.t.Helper()
	for n, k := range s.seen {
		if k != 1 {
			s.t.Errorf("message %d received %d times, want once", n, k)
		}
	}
}

func checkResult(t *testing.T, r SendResult, count int) {
	t.Helper()
	if r.Count != count || r.Confirmed != count || r.Unconfirmed != 0 || r.Republished != 0 {
		t.Errorf("result %+v, want %d confirmed", r, count)
	}
	for n := range count {
		if !r.IsConfirmed(n) {
			t.Fatalf("message %d not confirmed", n)
		}
	}
}

func TestSendRabbitMQ(t *testing.T) {
	ctx := testContext(t)
	url, ch := rabbit(t)
	queue := tempQueue(t, url, "hexmill-load-send")
	const count = 2000
	run := NewRunID()
	s := newSeqChecker(t, count)
	res, err := Send(ctx, SendConfig{Transport: RabbitMQ, URL: url, RunID: run, Count: count, Publishers: 3, Window: 32, RoutingKey: queue})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, count)
	t.Logf("rabbitmq: %d confirmed in %v (%.0f msg/s)", res.Confirmed, res.Elapsed, res.Rate())

	for _, d := range consumeN(t, ctx, ch, queue, count) {
		seq := s.telemetry(run, d.Body)
		if d.MessageId != messageID(run, seq) || d.DeliveryMode != 2 || d.ContentType != "application/json" {
			t.Fatalf("delivery of %d: id %q mode %d type %q", seq, d.MessageId, d.DeliveryMode, d.ContentType)
		}
	}
	s.done()
}

func TestSendRabbitMQUnroutable(t *testing.T) {
	ctx := testContext(t)
	url, _ := rabbit(t)
	res, err := Send(ctx, SendConfig{Transport: RabbitMQ, URL: url, Count: 10, RoutingKey: "hexmill-load-nowhere-" + NewRunID()})
	if err == nil || !strings.Contains(err.Error(), "unroutable") {
		t.Fatalf("err = %v, want unroutable", err)
	}
	if res.Confirmed != 0 {
		t.Errorf("%d confirmed, want 0", res.Confirmed)
	}
}

// TestSendStopsOnCancel cancels a paced send midway: Send returns promptly
// with what was confirmed, and every goroutine has stopped.
func TestSendStopsOnCancel(t *testing.T) {
	url, ch := rabbit(t)
	queue := tempQueue(t, url, "hexmill-load-cancel")
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	type result struct {
		r   SendResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := Send(ctx, SendConfig{Transport: RabbitMQ, URL: url, Count: 100000, Rate: 500, RoutingKey: queue})
		done <- result{r, err}
	}()
	// Cancel once ten messages went through.
	consumeN(t, ctx, ch, queue, 10)
	cancel()
	select {
	case r := <-done:
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", r.err)
		}
		if r.r.Confirmed < 10 || r.r.Confirmed >= 100000 {
			t.Errorf("%d confirmed, want some", r.r.Confirmed)
		}
		t.Logf("stopped after %d confirmed, %d unconfirmed", r.r.Confirmed, r.r.Unconfirmed)
	case <-time.After(10 * time.Second):
		t.Fatal("Send did not return within 10 s of the cancellation")
	}
}

func TestSendMQTT(t *testing.T) {
	ctx := testContext(t)
	brokerURL := integration.MQTTURL(t)
	run := NewRunID()
	const count = 400
	topic := "hexmill-load-test/" + run + "/{device_id}/telemetry"

	// Subscribe first, QoS 1, announcing a Receive Maximum that covers the
	// whole run so the broker queues nothing.
	got := make(chan *paho.Publish, count)
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	subscribed := make(chan error, 1)
	filter := strings.ReplaceAll(topic, "{device_id}", "+")
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		ConnectPacketBuilder: func(c *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if c.Properties == nil {
				c.Properties = &paho.ConnectProperties{}
			}
			rm := uint16(1000)
			c.Properties.ReceiveMaximum = &rm
			return c, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				_, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
				select {
				case subscribed <- err:
				default: // a resubscription after a reconnection
				}
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID: "hexmill-load-test-sub-" + run,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				got <- pr.Packet
				return true, nil
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cm.Disconnect(context.Background())
		<-cm.Done()
	}()
	if err := <-subscribed; err != nil {
		t.Fatalf("subscribe: %v", err)
	}

	s := newSeqChecker(t, count)
	// Paced at 2000 msg/s: 400 messages take at least 200 ms.
	res, err := Send(ctx, SendConfig{Transport: MQTT, URL: brokerURL, RunID: run, Count: count, Rate: 2000, Publishers: 2, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, count)
	if res.Elapsed < 190*time.Millisecond {
		t.Errorf("%d messages at 2000 msg/s took %v, want about 200ms", count, res.Elapsed)
	}
	t.Logf("mqtt: %d confirmed in %v (%.0f msg/s)", res.Confirmed, res.Elapsed, res.Rate())

	for range count {
		select {
		case p := <-got:
			seq := s.telemetry(run, p.Payload)
			if want := strings.ReplaceAll(topic, "{device_id}", DeviceID(run, seq%4)); p.Topic != want || p.QoS != 1 {
				t.Errorf("message %d on %q QoS %d, want %q QoS 1", seq, p.Topic, p.QoS, want)
			}
		case <-ctx.Done():
			t.Fatalf("received %d of %d: %v", sum(s.seen), count, ctx.Err())
		}
	}
	s.done()
}

// A PUBACK 0x10 (no matching subscribers) is not a confirmation: the
// publisher publishes the message again until GiveUp passes, then fails
// saying so.
func TestSendMQTTNoSubscriber(t *testing.T) {
	ctx := testContext(t)
	run := NewRunID()
	res, err := Send(ctx, SendConfig{
		Transport: MQTT, URL: integration.MQTTURL(t), RunID: run, Count: 2, Publishers: 1,
		Topic: "hexmill-load-test/" + run + "/nobody", GiveUp: 300 * time.Millisecond,
	})
	if !errors.Is(err, errNoSubscribers) {
		t.Fatalf("send to a topic nobody subscribes to: %v, want %v", err, errNoSubscribers)
	}
	if res.Confirmed != 0 || res.NoSubscribers < 2 || res.Republished < 1 {
		t.Fatalf("confirmed %d, no subscriber %d, republished %d; want 0 confirmed, both dropped and published again",
			res.Confirmed, res.NoSubscribers, res.Republished)
	}
	t.Logf("%d PUBACKs with 0x10, %d republished before giving up", res.NoSubscribers, res.Republished)
}

func sum(ns []int) int {
	total := 0
	for _, n := range ns {
		total += n
	}
	return total
}

func TestSendAMQP1(t *testing.T) {
	ctx := testContext(t)
	rabbitURL, _ := rabbit(t)
	addr := integration.AMQP1Addr(t)
	queue := tempQueue(t, rabbitURL, "hexmill-load-amqp1")
	amqpURL := "amqp://guest:guest@" + addr

	conn, err := amqp1.Dial(ctx, amqpURL, nil)
	if err != nil {
		t.Skipf("AMQP 1.0 not available at %s (run `rabbitmq-plugins enable rabbitmq_amqp1_0`): %v", addr, err)
	}
	defer conn.Close()
	session, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Explicit credit: go-amqp's automatic credit stalls against RabbitMQ
	// 3.10 (see the brief).
	receiver, err := session.NewReceiver(ctx, "/amq/queue/"+queue, &amqp1.ReceiverOptions{Credit: -1})
	if err != nil {
		t.Fatal(err)
	}

	const count = 1000
	run := NewRunID()
	s := newSeqChecker(t, count)
	res, err := Send(ctx, SendConfig{Transport: AMQP1, URL: amqpURL, RunID: run, Count: count, Publishers: 2, Address: "/amq/queue/" + queue})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, count)
	t.Logf("amqp1: %d confirmed in %v (%.0f msg/s)", res.Confirmed, res.Elapsed, res.Rate())

	if err := receiver.IssueCredit(count); err != nil {
		t.Fatal(err)
	}
	for range count {
		m, err := receiver.Receive(ctx, nil)
		if err != nil {
			t.Fatalf("receive after %d: %v", sum(s.seen), err)
		}
		if err := receiver.AcceptMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
		seq := checkAliyunPush(t, run, m)
		s.record(seq, time.UnixMilli(m.ApplicationProperties[propGenerateTime].(int64)))
	}
	s.done()
}

// checkAliyunPush checks an Aliyun push message of run and translates it as
// hexmill's Aliyun adapter does: the result must be the telemetry of
// device load-{run}.{k} with the message's number.
func checkAliyunPush(t *testing.T, run string, m *amqp1.Message) int {
	t.Helper()
	var post struct {
		ID      string         `json:"id"`
		Version string         `json:"version"`
		Params  map[string]int `json:"params"`
		Method  string         `json:"method"`
	}
	if err := json.Unmarshal(m.GetData(), &post); err != nil {
		t.Fatalf("body %s: %v", m.GetData(), err)
	}
	seq := post.Params[Metric]
	pk, dn := AliyunDevice(run, seq%4)
	props := m.ApplicationProperties
	if post.ID != strings.TrimPrefix(messageID("", seq), "-") || post.Version != "1.0" || post.Method != "thing.event.property.post" || len(post.Params) != 1 {
		t.Fatalf("body %s", m.GetData())
	}
	if props[propTopic] != "/"+pk+"/"+dn+"/thing/event/property/post" || props[propMessageID] != messageID(run, seq) {
		t.Fatalf("application properties %v of message %d", props, seq)
	}
	if _, ok := props[propGenerateTime].(int64); !ok {
		t.Fatalf("generateTime %T, want int64 epoch ms", props[propGenerateTime])
	}

	// As the adapter's subscriber: application properties as metadata,
	// the device from the topic.
	wm := wmessage.NewMessage(props[propMessageID].(string), m.GetData())
	for k, v := range props {
		switch v := v.(type) {
		case string:
			wm.Metadata.Set(k, v)
		case int64:
			wm.Metadata.Set(k, strconv.FormatInt(v, 10))
		}
	}
	if p, d, ok := aliyun.ParseTopic(props[propTopic].(string)); ok {
		wm.Metadata.Set(aliyun.MetadataProductKey, p)
		wm.Metadata.Set(aliyun.MetadataDeviceName, d)
	}
	tel, err := aliyun.ParsePropertyPost(wm)
	if err != nil {
		t.Fatalf("translation of %s: %v", m.GetData(), err)
	}
	if tel.DeviceID != pk+"."+dn || tel.Properties[Metric] != float64(seq) || !tel.At.Equal(time.UnixMilli(props[propGenerateTime].(int64))) {
		t.Fatalf("translated %+v, want device %s.%s seq %d at generateTime", tel, pk, dn, seq)
	}
	if !belongsTo(tel.DeviceID, run) {
		t.Fatalf("device %s is not recognised as the run's", tel.DeviceID)
	}
	return seq
}
