package config

import (
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

// checkBounds validates the binding's bounds on one message: its size,
// its hand-backs and one handler attempt.
func (b Binding) checkBounds(path string) error {
	if err := transport.CheckMaxMessageBytes(path+".max_message_bytes", b.MaxMessageBytes); err != nil {
		return err
	}
	if b.MaxHandbacks < 0 {
		return &ports.FieldError{Field: path + ".max_handbacks", Fix: "must be 0 (never poison for hand-backs, the default) or more, e.g. 20"}
	}
	if b.HandlerTimeout < 0 {
		return &ports.FieldError{Field: path + ".handler_timeout", Fix: "must be 0 (no bound, the default) or a positive duration, e.g. 30s"}
	}
	return nil
}
