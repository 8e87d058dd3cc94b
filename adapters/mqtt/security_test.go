package mqtt

import (
	"slices"
	"strings"
	"testing"

	"github.com/hexmill/hexmill/adapters/transport/secret"
)

// A password over mqtt:// or ws:// to a server that is not loopback is
// refused, naming servers and both fixes; TLS, loopback, no password or
// allow_plaintext pass. The error never prints the password.
func TestConfigRefusesPlaintextPassword(t *testing.T) {
	cases := []struct {
		name    string
		servers []string
		pass    string
		allow   bool
		refused bool
	}{
		{"mqtt to a remote host", []string{"mqtt://broker.example.com:1883"}, "hunter2", false, true},
		{"ws to a remote host", []string{"ws://10.0.0.5:8080/mqtt"}, "hunter2", false, true},
		{"one plaintext server among TLS ones", []string{"mqtts://a.example.com:8883", "mqtt://b.example.com:1883"}, "hunter2", false, true},
		{"compose service name", []string{"mqtt://mosquitto:1883"}, "hunter2", false, true},
		{"mqtts", []string{"mqtts://broker.example.com:8883"}, "hunter2", false, false},
		{"wss", []string{"wss://broker.example.com/mqtt"}, "hunter2", false, false},
		{"loopback", []string{"mqtt://127.0.0.1:1883", "mqtt://localhost:1883", "mqtt://[::1]:1883"}, "hunter2", false, false},
		{"no password", []string{"mqtt://broker.example.com:1883"}, "", false, false},
		{"allow_plaintext", []string{"mqtt://broker.example.com:1883"}, "hunter2", true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Servers: tc.servers, Username: "u", AllowPlaintext: tc.allow}
			c.Password = secret.String(tc.pass)
			c.SetDefaults()
			err := c.Validate()
			if !tc.refused {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), "servers: ") || !strings.Contains(err.Error(), "mqtts://") ||
				!strings.Contains(err.Error(), "allow_plaintext: true") || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("got %v, want servers: naming mqtts:// and allow_plaintext, without the password", err)
			}
		})
	}
}

// allow_plaintext and tls.insecure_skip_verify are warned about.
func TestConfigWarnings(t *testing.T) {
	c := Config{}
	if w := c.Warnings(); len(w) != 0 {
		t.Fatalf("warnings %v, want none", w)
	}
	c.AllowPlaintext, c.TLS.InsecureSkipVerify = true, true
	var settings []string
	for _, w := range c.Warnings() {
		settings = append(settings, w.Setting)
	}
	if !slices.Equal(settings, []string{"allow_plaintext", "tls.insecure_skip_verify"}) {
		t.Fatalf("warnings %v", settings)
	}
}
