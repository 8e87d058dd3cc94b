package aliyun

import (
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

// checkPlaintext refuses tls: false to a host that is not loopback,
// unless AllowPlaintext: SASL PLAIN would send the signed password (and
// the STS token) as they are, and whoever reads them can consume the
// consumer group until the signature's timestamp expires.
func (c Config) checkPlaintext() error {
	if c.tls() || c.AllowPlaintext || transport.Loopback(c.Endpoint()) {
		return nil
	}
	return &ports.FieldError{Field: "tls", Fix: transport.PlaintextFix("the signed password", c.Endpoint(), "remove tls: false (Aliyun takes AMQPS on 5671)")}
}

// Warnings implements transport.Warner.
func (c Config) Warnings() []transport.Warning {
	if !c.AllowPlaintext {
		return nil
	}
	return []transport.Warning{{Setting: "allow_plaintext", Risk: "the signed password may travel unencrypted (tls: false); for a local network only"}}
}

var _ transport.Warner = Config{}
