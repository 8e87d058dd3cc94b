package mqtt

// MaxMessageBytes implements transport.MessageSizer: the configured
// max_message_bytes.
func (t *Transport) MaxMessageBytes() int { return t.cfg.MaxMessageBytes }
