package aliyun

import "github.com/hexmill/hexmill/adapters/transport"

// MaxMessageBytes implements transport.MessageSizer: the configured
// max_message_bytes.
func (t *Transport) MaxMessageBytes() int { return t.cfg.MaxMessageBytes }

// linkHeadroom is what the receiver link's max-message-size allows beyond
// max_message_bytes: the message's header, properties and application
// properties. A payload just above the limit still arrives and is
// poisoned (too_large) by the runtime.
const linkHeadroom = 64 << 10

// maxLinkMessageSize is the max-message-size the receiver link announces
// in its attach, so that the broker sends nothing larger. go-amqp keeps
// the smaller of it and the broker's own (0, unlimited, for RabbitMQ's
// plugin, which then keeps no local bound: a message that still comes is
// not fatal to the link, it reaches the runtime and is poisoned). Every
// binding shares the connection's link, so the transport's setting
// counts here; a binding's max_message_bytes applies in the runtime.
func (c Config) maxLinkMessageSize() uint64 {
	n := c.MaxMessageBytes
	if n <= 0 {
		n = transport.DefaultMaxMessageBytes
	}
	return uint64(n + linkHeadroom)
}
