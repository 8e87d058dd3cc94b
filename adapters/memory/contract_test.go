package memory_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport/transporttest"
)

func TestContract(t *testing.T) {
	transporttest.Run(t, func(t *testing.T) transporttest.Binding {
		b := newBroker(t)
		topic := "contract." + watermill.NewShortUUID()
		return transporttest.Binding{
			Topic: topic,
			NewSubscriber: func(t *testing.T, concurrency int) message.Subscriber {
				return newSubscriber(t, b, "contract", concurrency)
			},
			Publish: func(t *testing.T, payloads ...[]byte) {
				for _, p := range payloads {
					if err := b.Publish(topic, message.NewMessage(watermill.NewUUID(), p)); err != nil {
						t.Fatal(err)
					}
				}
			},
		}
	})
}
