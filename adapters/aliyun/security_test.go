package aliyun

import (
	"strings"
	"testing"
)

// tls: false to a host that is not loopback is refused, naming tls and
// both fixes; TLS, loopback and allow_plaintext pass, and allow_plaintext
// is warned about.
func TestConfigRefusesPlaintext(t *testing.T) {
	off := false
	for _, tc := range []struct {
		name    string
		host    string
		tls     *bool
		allow   bool
		refused bool
	}{
		{"tls off to Aliyun", "iot-1.amqp.iothub.aliyuncs.com", &off, false, true},
		{"tls off to a compose service", "rabbitmq", &off, false, true},
		{"tls on", "iot-1.amqp.iothub.aliyuncs.com", nil, false, false},
		{"tls off to loopback", "127.0.0.1", &off, false, false},
		{"allow_plaintext", "rabbitmq", &off, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Host: tc.host, TLS: tc.tls, AllowPlaintext: tc.allow, AccessKeyID: "ak", AccessKeySecret: "s3cr3t", ConsumerGroupID: "g", ClientID: "a"}
			c.SetDefaults()
			err := c.Validate()
			if !tc.refused {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), "tls: ") || !strings.Contains(err.Error(), "allow_plaintext: true") || strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("got %v, want tls: naming allow_plaintext, without the secret", err)
			}
		})
	}
	if w := (Config{AllowPlaintext: true}).Warnings(); len(w) != 1 || w[0].Setting != "allow_plaintext" {
		t.Fatalf("warnings %v", w)
	}
}
