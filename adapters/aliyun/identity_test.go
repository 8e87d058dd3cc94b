package aliyun_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/aliyun"
	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/ports"
)

// Over AMQP 1.0 the topic is Aliyun's topic application property (Aliyun
// sets it; a device cannot). Every other framework key, the keys parsed
// from the topic (productKey, deviceName, device_id) and a topic_params
// name never come from another application property; a topic that does
// not match topic_params poisons its message.
func TestIdentityFromTopicAMQP1(t *testing.T) {
	addr := aliyun.SigningBroker(t)
	queue := aliyun.UniqueQueue("identity")
	c := aliyun.ConsumerConfig(t, addr, queue)
	config := fmt.Sprintf(`service: hx-id-amqp1
http_addr: "off"
drain_timeout: 5s
poison: {transport: memory, topic: poison}
transports:
%[1]shandlers:
  probe: {transport: aliyun, topic: "/a1b2/+/user/#", topic_params: "/a1b2/{thing}/user/status"}
`, aliyun.ServiceSection(c))
	path := filepath.Join(t.TempDir(), "service.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan ports.Message, 4)
	var broker *memory.Transport
	svc := app.New(app.Service{Name: "hxid", Options: []fx.Option{app.AsHandler(func() ports.Handler {
		return ports.HandlerFunc{HandlerName: "probe", Func: func(_ context.Context, msg ports.Message) error {
			got <- msg
			return nil
		}}
	})}}, app.Env{"HXID_CONFIG": path}, fx.Populate(&broker), fx.NopLogger)
	if err := svc.Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })

	forged := map[string]string{
		"thing": "someone-else", aliyun.MetadataProductKey: "other", aliyun.MetadataDeviceName: "other",
		aliyun.MetadataDeviceID: "other.other", ports.MetadataRedelivered: "true",
		ports.MetadataEventType: "Forged", ports.MetadataCorrelationID: "forged-correlation",
		ports.MetadataContentType: "text/forged", middleware.ReasonForPoisonedKey: "forged",
		middleware.PoisonedTopicKey: "forged", middleware.PoisonedHandlerKey: "forged",
		middleware.PoisonedSubscriberKey: "forged",
	}
	p := aliyun.NewPusher(t, addr)
	const topic = "/a1b2/dev-1/user/status"
	if err := p.Push(queue, topic, "m-1", []byte("{}"), forged); err != nil {
		t.Fatal(err)
	}
	if err := p.Push(queue, "/a1b2/dev-1/user/other", "m-2", []byte("{}"), forged); err != nil {
		t.Fatal(err)
	}

	var msg ports.Message
	select {
	case msg = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler got no message")
	}
	want := map[string]string{
		ports.MetadataTopic: topic, "thing": "dev-1", aliyun.MetadataProductKey: "a1b2",
		aliyun.MetadataDeviceName: "dev-1", aliyun.MetadataDeviceID: "a1b2.dev-1",
	}
	for k, v := range want {
		if msg.Attributes[k] != v {
			t.Errorf("attribute %s = %q, want %q from the topic", k, msg.Attributes[k], v)
		}
	}
	for k, v := range forged {
		if _, fromTopic := want[k]; !fromTopic && msg.Attributes[k] == v {
			t.Errorf("attribute %s = %q reached the handler from the sender's application property", k, v)
		}
	}
	if msg.Topic != topic || msg.CorrelationID == forged[ports.MetadataCorrelationID] {
		t.Errorf("topic %q, correlation ID %q", msg.Topic, msg.CorrelationID)
	}

	sub, err := broker.Subscriber(memory.SubscriberConfig{Group: "test", Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	poison, err := sub.Subscribe(ctx, "poison")
	if err != nil {
		t.Fatal(err)
	}
	var poisoned *message.Message
	select {
	case poisoned = <-poison:
		poisoned.Ack()
	case <-time.After(30 * time.Second):
		t.Fatal("the message on a topic that does not match topic_params was not poisoned")
	}
	if reason := poisoned.Metadata.Get(middleware.ReasonForPoisonedKey); !strings.Contains(reason, "does not match the binding's topic_params") {
		t.Errorf("poison reason %q, want the topic_params mismatch", reason)
	}
	select {
	case m := <-got:
		t.Errorf("the message on a topic that does not match topic_params was handled: %s %v", m.Topic, m.Attributes)
	case <-time.After(200 * time.Millisecond):
	}
}
