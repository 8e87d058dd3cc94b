package mqtt

import "github.com/hexmill/hexmill/adapters/transport"

// MaxMessageBytes implements transport.MessageSizer: the configured
// max_message_bytes.
func (t *Transport) MaxMessageBytes() int { return t.cfg.MaxMessageBytes }

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
