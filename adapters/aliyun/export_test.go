package aliyun

import (
	"fmt"
	"testing"
)

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

// ServiceSection is the transports.aliyun section of a service's YAML
// configuration for c (the signing broker's consumer), indented for its
// place under transports:.
func ServiceSection(c Config) string {
	return fmt.Sprintf(`  aliyun:
    host: %s
    port: %d
    tls: false
    access_key_id: %s
    access_key_secret: %s
    consumer_group_id: %s
    client_id: %s
    sign_method: %s
    credit: %d
    source_address: %s
    unmatched_delay: 50ms
    start_timeout: 20s
`, c.Host, c.Port, c.AccessKeyID, c.AccessKeySecret.Reveal(), c.ConsumerGroupID, c.ClientID, c.SignMethod, c.Credit, c.SourceAddress)
}
