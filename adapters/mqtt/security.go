package mqtt

import (
	"net/url"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

// checkPlaintext refuses a password sent over mqtt:// or ws:// to a server
// that is not loopback, unless AllowPlaintext. Without a password nothing
// secret travels, and an anonymous broker is the operator's choice.
func (c Config) checkPlaintext() error {
	if c.Password == "" || c.AllowPlaintext {
		return nil
	}
	for _, s := range c.Servers {
		u, err := url.Parse(s)
		if err != nil {
			continue // reported by Validate
		}
		if (u.Scheme == "mqtt" || u.Scheme == "ws") && !transport.Loopback(u.Hostname()) {
			return &ports.FieldError{Field: "servers", Fix: transport.PlaintextFix("the password", u.Hostname(), "use mqtts:// or wss://")}
		}
	}
	return nil
}

// Warnings implements transport.Warner.
func (c Config) Warnings() []transport.Warning {
	var w []transport.Warning
	if c.AllowPlaintext {
		w = append(w, transport.Warning{Setting: "allow_plaintext", Risk: "the password may travel unencrypted (mqtt://, ws://); for a local network only"})
	}
	if c.TLS.InsecureSkipVerify {
		w = append(w, transport.Warning{Setting: "tls.insecure_skip_verify", Risk: "the broker's certificate is not checked: anyone on the path can pose as the broker and read the password and every message"})
	}
	return w
}

var _ transport.Warner = Config{}
