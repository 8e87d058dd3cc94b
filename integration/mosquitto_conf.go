package integration

import (
	"io"
	"strings"
)

// mosquittoConf is the broker configuration hexmill needs from Mosquitto:
// no silent drops of queued QoS 1/2 messages (see docs/mqtt.md).
func mosquittoConf() io.Reader {
	return strings.NewReader(`listener 1883
allow_anonymous true
max_inflight_messages 0
max_queued_messages 0
persistence false
`)
}
