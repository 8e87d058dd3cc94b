package postgres

import (
	"net"
	"net/url"
	"strings"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

// plaintextModes are the sslmodes that may talk to the server without
// TLS (disable, and allow and prefer, which fall back to it) or without
// checking who it is.
var plaintextModes = map[string]bool{"disable": true, "allow": true, "prefer": true}

// defaultSSLMode is the sslmode of a connection that sets none: prefer
// when every host is loopback (or a Unix socket), verify-full otherwise.
func defaultSSLMode(hosts []string) string {
	if remoteHost(hosts) == "" {
		return "prefer"
	}
	return "verify-full"
}

// remoteHost is the first of hosts that is neither loopback nor a Unix
// socket directory, "" when there is none.
func remoteHost(hosts []string) string {
	for _, h := range hosts {
		if h != "" && !strings.HasPrefix(h, "/") && !transport.Loopback(h) {
			return h
		}
	}
	return ""
}

// urlHosts are the hosts of a postgres:// URL: those of its authority
// (host1:5432,host2:5432) or of its host parameter, which wins.
func urlHosts(u *url.URL) []string {
	list := u.Host
	if h := u.Query().Get("host"); h != "" {
		list = h
	}
	return splitHosts(list)
}

// splitHosts are the host names of a comma-separated list of hosts, each
// with or without a port.
func splitHosts(list string) []string {
	var hosts []string
	for _, hp := range strings.Split(list, ",") {
		hp = strings.TrimSpace(hp)
		if h, _, err := net.SplitHostPort(hp); err == nil {
			hp = h
		}
		hosts = append(hosts, strings.Trim(hp, "[]"))
	}
	return hosts
}

// withSSLMode is raw, a postgres:// URL, with the default sslmode added
// when it sets none (see defaultSSLMode); raw as it is otherwise.
func withSSLMode(raw string) string {
	u, err := url.Parse(raw)
	if raw == "" || err != nil || u.Query().Has("sslmode") {
		return raw
	}
	mode := defaultSSLMode(urlHosts(u))
	if mode == "prefer" {
		return raw // libpq's own default (or PGSSLMODE), as before
	}
	q := u.Query()
	q.Set("sslmode", mode)
	u.RawQuery = q.Encode()
	return u.String()
}

// checkPlaintext refuses an sslmode that may send the password and the
// data unencrypted, or to an impostor, to a host that is not loopback,
// unless AllowPlaintext. c has its defaults.
func (c Config) checkPlaintext() error {
	if c.AllowPlaintext {
		return nil
	}
	field, mode, hosts := "sslmode", c.SSLMode, splitHosts(c.Host)
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil {
			return nil // reported by Validate
		}
		field, hosts = "url", urlHosts(u)
		mode = u.Query().Get("sslmode")
		if mode == "" {
			mode = defaultSSLMode(hosts)
		}
	}
	host := remoteHost(hosts)
	if host == "" || !plaintextModes[mode] {
		return nil
	}
	return &ports.FieldError{Field: field, Fix: transport.PlaintextFix("with sslmode "+mode+" the password and the data", host,
		"use sslmode=verify-full (or verify-ca, or require where the network is trusted not to impersonate the server)")}
}

// Warnings implements transport.Warner: the postgres section is no
// transport, but its escape hatch is warned about the same way.
func (c Config) Warnings() []transport.Warning {
	if !c.AllowPlaintext {
		return nil
	}
	return []transport.Warning{{Setting: "allow_plaintext", Risk: "sslmode disable, allow or prefer may send the password and the data unencrypted; for a local network only"}}
}
