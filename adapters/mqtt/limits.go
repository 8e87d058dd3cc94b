package mqtt

import "github.com/hexmill/hexmill/adapters/transport"

// MaxMessageBytes implements transport.MessageSizer: the configured
// max_message_bytes.
func (t *Transport) MaxMessageBytes() int { return t.cfg.MaxMessageBytes }

// DefaultMaxQueuedBytes is Config.MaxQueuedBytes's default.
const DefaultMaxQueuedBytes = 64 << 20

// packetHeadroom is what a subscriber's Maximum Packet Size allows beyond
// max_message_bytes: the fixed header, the topic (at most 65 535 bytes)
// and the properties. A payload just above the limit still arrives and is
// poisoned (too_large) by the runtime; a packet above limit + headroom is
// dropped by the broker, which MQTT 5 lets it do silently.
const packetHeadroom = 64 << 10

// maxPacketSize is the Maximum Packet Size the subscriber announces: the
// binding's max_message_bytes (else the transport's) plus packetHeadroom.
func (s *Subscriber) maxPacketSize() uint32 {
	n := s.sc.MaxMessageBytes
	if n <= 0 {
		n = s.cfg.MaxMessageBytes
	}
	if n <= 0 {
		n = transport.DefaultMaxMessageBytes
	}
	return uint32(n + packetHeadroom)
}

// full reports whether r's queue holds receive_maximum messages or
// max_queued_bytes of payload: onPublish then waits for room (waitRoom),
// so that what the broker sends beyond stays in the broker. s.mu must be
// held.
func (s *Subscriber) full(r *route) bool {
	return len(r.queue) >= s.cfg.ReceiveMaximum || r.bytes >= s.cfg.MaxQueuedBytes
}

// queuedBytes is the payload bytes of q.
func queuedBytes(q []*inbound) int {
	n := 0
	for _, in := range q {
		n += len(in.pb.Payload)
	}
	return n
}
