package transport_test

import (
	"testing"

	"github.com/hexmill/hexmill/adapters/transport"
)

func TestLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST.": true, "db.localhost": true, "127.0.0.1": true, "127.1.2.3": true,
		"::1": true, "[::1]": true,
		"": false, "rabbitmq": false, "postgres": false, "10.0.0.1": false, "0.0.0.0": false,
		"::": false, "broker.example.com": false, "localhost.example.com": false, "128.0.0.1": false,
	} {
		if got := transport.Loopback(host); got != want {
			t.Errorf("Loopback(%q) = %v, want %v", host, got, want)
		}
	}
}
