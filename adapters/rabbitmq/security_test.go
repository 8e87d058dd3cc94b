package rabbitmq_test

import (
	"strings"
	"testing"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
)

// amqp:// to a broker that is not loopback is refused, naming the setting
// and both fixes, without printing the password; amqps://, tls.enabled,
// loopback and allow_plaintext pass, and allow_plaintext is warned about.
func TestValidateRefusesPlaintext(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*rabbitmq.Config)
		want   string // prefix of the error; "" for valid
	}{
		{"amqp to a remote host", func(c *rabbitmq.Config) { c.URL = "amqp://app:hunter2@rabbit.example.com:5672/" }, "url: "},
		{"compose service name", func(c *rabbitmq.Config) { c.URL = "amqp://guest:guest@rabbitmq:5672/" }, "url: "},
		{"host field", func(c *rabbitmq.Config) { c.Host, c.Password = "10.0.0.7", "hunter2" }, "host: "},
		{"host field over a loopback URL", func(c *rabbitmq.Config) { c.URL, c.Host = "amqp://127.0.0.1/", "rabbit.example.com" }, "host: "},
		{"amqps", func(c *rabbitmq.Config) { c.URL = "amqps://app:hunter2@rabbit.example.com:5671/" }, ""},
		{"tls.enabled", func(c *rabbitmq.Config) { c.URL, c.TLS.Enabled = "amqp://rabbit.example.com/", true }, ""},
		{"loopback", func(c *rabbitmq.Config) { c.URL = "amqp://guest:guest@localhost:5672/" }, ""},
		{"allow_plaintext", func(c *rabbitmq.Config) {
			c.URL, c.AllowPlaintext = "amqp://app:hunter2@rabbit.example.com:5672/", true
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c rabbitmq.Config
			c.SetDefaults()
			tc.modify(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || !strings.Contains(err.Error(), "amqps://") ||
				!strings.Contains(err.Error(), "allow_plaintext: true") || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("got %v, want %q naming amqps:// and allow_plaintext, without the password", err, tc.want)
			}
		})
	}
	c := rabbitmq.Config{AllowPlaintext: true}
	if w := c.Warnings(); len(w) != 1 || w[0].Setting != "allow_plaintext" {
		t.Fatalf("warnings %v, want allow_plaintext", w)
	}
	if w := (rabbitmq.Config{}).Warnings(); len(w) != 0 {
		t.Fatalf("warnings %v, want none", w)
	}
}
