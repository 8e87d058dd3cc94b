package rabbitmq

import (
	"net/url"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

// checkPlaintext refuses amqp:// (no TLS) to a broker that is not
// loopback, unless AllowPlaintext: AMQP's PLAIN authentication sends the
// user and password as they are (guest/guest when none is set).
func (c Config) checkPlaintext() error {
	if c.AllowPlaintext {
		return nil
	}
	dial, err := c.dialURL()
	if err != nil {
		return nil // reported by Validate
	}
	u, err := url.Parse(dial)
	if err != nil || u.Scheme != "amqp" || transport.Loopback(u.Hostname()) {
		return nil
	}
	field := "url"
	if c.Host != "" {
		field = "host"
	}
	return &ports.FieldError{Field: field, Fix: transport.PlaintextFix("the user and password", u.Hostname(), "use amqps:// (or tls.enabled: true)")}
}

// Warnings implements transport.Warner.
func (c Config) Warnings() []transport.Warning {
	if !c.AllowPlaintext {
		return nil
	}
	return []transport.Warning{{Setting: "allow_plaintext", Risk: "the user and password may travel unencrypted (amqp://); for a local network only"}}
}

var _ transport.Warner = Config{}
