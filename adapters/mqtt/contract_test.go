package mqtt_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/adapters/transport/transporttest"
	"github.com/hexmill/hexmill/integration"
)

// TestContract runs the subscribers' contract suite against a private
// mosquitto with the limits of docs/mqtt.md (the suite's bursts are above
// the shared broker's queue limit). The subscribers of one binding share
// a client ID, so that one resumes the session another closed.
func TestContract(t *testing.T) {
	broker := integration.StartMosquitto(t, "")
	transporttest.Run(t, func(t *testing.T) transporttest.Binding {
		cfg := testConfig(t, broker.URL(), "")
		pub := newPublisher(t, cfg)
		topic := "contract/" + watermill.NewShortUUID()
		return transporttest.Binding{
			Topic: topic,
			NewSubscriber: func(t *testing.T, concurrency int) message.Subscriber {
				return newSubscriber(t, cfg, mqtt.SubscriberConfig{Handler: "contract", Concurrency: concurrency})
			},
			Publish: func(t *testing.T, payloads ...[]byte) {
				for _, p := range payloads {
					if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), p)); err != nil {
						t.Fatal(err)
					}
				}
			},
		}
	})
}
