package integration

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

// What the helpers publish arrives: over AMQP 0-9-1 and AMQP 1.0 on a
// queue of the test's, read back with ReadRabbitMQ; over MQTT acknowledged.
func TestPublishHelpers(t *testing.T) {
	rabbitURL := RabbitMQURL(t)
	ch := RabbitMQChannel(t, rabbitURL)
	queue := "publish-helpers-" + strings.ToLower(rand.Text()[:10])
	// Not exclusive: AMQP 1.0 comes on a connection of its own.
	if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = ch.QueueDelete(queue, false, false, false) })

	PublishRabbitMQ(t, rabbitURL, "", queue, []byte("over 0-9-1"))
	if got := string(ReadRabbitMQ(t, rabbitURL, queue, 10*time.Second)); got != "over 0-9-1" {
		t.Errorf("ReadRabbitMQ = %q, want %q", got, "over 0-9-1")
	}
	PublishAMQP1(t, AMQP1Addr(t), "/amq/queue/"+queue, []byte("over 1.0"))
	if got := string(ReadRabbitMQ(t, rabbitURL, queue, 10*time.Second)); got != "over 1.0" {
		t.Errorf("ReadRabbitMQ = %q, want %q", got, "over 1.0")
	}
	PublishMQTT(t, MQTTURL(t), "publish-helpers/"+queue, []byte("over MQTT"))
}
