package transport

import (
	"net"
	"strings"
)

// Loopback reports whether host (a name or an IP address, without port or
// brackets) is this machine: "localhost" (or a name under it) or an
// address in 127.0.0.0/8 or ::1. It resolves nothing, so it reads the
// configuration as written: a name that resolves to a loopback address is
// not loopback here. A service name of docker compose (rabbitmq,
// postgres) is another container, reached over a network: not loopback.
func Loopback(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Warning is a setting that weakens security on purpose (allow_plaintext,
// insecure_skip_verify): Setting is its path within its section, Risk
// what it exposes.
type Warning struct {
	Setting, Risk string
}

// Warner is a configuration section with such settings; the service logs
// each of its Warnings at WARN on every start, so that an escape hatch
// left open never goes unnoticed.
type Warner interface {
	Warnings() []Warning
}

// PlaintextFix is the fix a configuration error gives for a secret that
// would travel in plaintext to a host that is not loopback: what to use
// instead (tlsFix) and the escape hatch.
func PlaintextFix(what, host, tlsFix string) string {
	return what + " would travel unencrypted to " + host + ", which is not loopback; " + tlsFix +
		", or set allow_plaintext: true on a network you trust (it logs a warning at every start)"
}
