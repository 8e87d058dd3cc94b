package rabbitmq_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
)

// A message whose headers would not fit one AMQP frame fails alone, with
// ErrHeadersTooLarge: it never reaches the connection, which RabbitMQ
// would close (FRAME_ERROR frame_too_large), failing every publish on it.
// The message after it is published on the same connection.
func TestHeadersTooLargeFailAlone(t *testing.T) {
	queue := uniqueName("headers")
	adm := newAdmin(t)
	adm.cleanup([]string{queue}, nil)
	c := newClient(t, rabbitmq.Config{Queues: []rabbitmq.QueueConfig{{Name: queue, Type: rabbitmq.QueueClassic}}})
	pub, err := c.Publisher(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	huge := message.NewMessage("huge", []byte("{}"))
	huge.Metadata.Set("reason", strings.Repeat("9", 200<<10))
	if err := pub.Publish(queue, huge); !errors.Is(err, rabbitmq.ErrHeadersTooLarge) {
		t.Fatalf("publish with 200 KiB of headers: %v, want ErrHeadersTooLarge", err)
	}
	if err := pub.Publish(queue, message.NewMessage("next", []byte("{}"))); err != nil {
		t.Fatalf("the publish after it: %v", err)
	}
	if d := adm.get(queue, 10*time.Second); d.MessageId != "next" {
		t.Fatalf("got %q, want next", d.MessageId)
	}
	if err := c.Ready(); err != nil {
		t.Fatalf("transport not ready after it: %v", err)
	}
}
