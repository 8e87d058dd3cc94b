package aliyun

import (
	"errors"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport/transporttest"
)

// TestContract runs the subscribers' contract suite on the signing
// broker, a queue of its own per test pushed to the way Aliyun pushes.
// Each subscriber has a transport of its own (one consumer of the
// group), closed with it.
func TestContract(t *testing.T) {
	addr := signingBroker(t)
	transporttest.Run(t, func(t *testing.T) transporttest.Binding {
		queue := uniqueQueue("contract")
		p := newPusher(t, addr)
		return transporttest.Binding{
			Topic: telemetryFilter,
			NewSubscriber: func(t *testing.T, concurrency int) message.Subscriber {
				c := newConsumer(t, testConfig(t, addr, queue))
				sub, err := c.Subscriber(SubscriberConfig{Handler: "contract", Concurrency: concurrency})
				if err != nil {
					t.Fatal(err)
				}
				return &closingBoth{Subscriber: sub, c: c}
			},
			Publish: func(t *testing.T, payloads ...[]byte) {
				var wg sync.WaitGroup
				errs := make([]error, len(payloads))
				for w := range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := w; i < len(payloads); i += 8 {
							errs[i] = p.push(queue, topicFor(1), watermill.NewShortUUID(), payloads[i], nil)
						}
					}()
				}
				wg.Wait()
				if err := errors.Join(errs...); err != nil {
					t.Fatalf("push: %v", err)
				}
			},
		}
	})
}

// closingBoth closes its transport after the subscriber.
type closingBoth struct {
	message.Subscriber
	c *Transport
}

func (s *closingBoth) Close() error {
	return errors.Join(s.Subscriber.Close(), s.c.Close())
}
