package rabbitmq

import (
	"fmt"
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
	dials, err := c.dialURLs()
	if err != nil {
		return nil // reported by Validate
	}
	for i, dial := range dials {
		u, err := url.Parse(dial)
		if err != nil || u.Scheme != "amqp" || transport.Loopback(u.Hostname()) {
			continue
		}
		field := "url"
		switch {
		case c.Host != "":
			field = "host"
		case len(c.URLs) > 0:
			field = fmt.Sprintf("urls[%d]", i)
		}
		return &ports.FieldError{Field: field, Fix: transport.PlaintextFix("the user and password", u.Hostname(), "use amqps:// (or tls.enabled: true)")}
	}
	return nil
}

// Warnings implements transport.Warner.
func (c Config) Warnings() []transport.Warning {
	if !c.AllowPlaintext {
		return nil
	}
	return []transport.Warning{{Setting: "allow_plaintext", Risk: "the user and password may travel unencrypted (amqp://); for a local network only"}}
}

var _ transport.Warner = Config{}
