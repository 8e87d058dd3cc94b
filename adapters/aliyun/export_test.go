package aliyun

import "testing"

// For the external tests (package aliyun_test), which run the service's
// runtime on this transport: the signature-checking broker and the pusher.

var (
	SigningBroker  = signingBroker
	ConsumerConfig = testConfig
	UniqueQueue    = uniqueQueue
)

// Pusher sends as Aliyun pushes.
type Pusher = pusher

func NewPusher(t testing.TB, addr string) *Pusher { return newPusher(t, addr) }

// Push sends one message to queue with topic and application properties md.
func (p *pusher) Push(queue, topic, id string, payload []byte, md map[string]string) error {
	return p.push(queue, topic, id, payload, md)
}
