// Package tlsfiles builds a client TLS configuration from the files the
// transports' configuration names (tls.ca_file, tls.cert_file,
// tls.key_file), with errors that name the setting to fix.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Files are a transport's TLS settings.
type Files struct {
	CAFile     string // PEM CA bundle; empty for the system roots
	CertFile   string // PEM client certificate; empty for none
	KeyFile    string // its PEM key
	ServerName string // name to verify the server against; empty for the dialled host
}

// Config returns a TLS 1.2+ client configuration for f.
func (f Files) Config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: no PEM certificate in %s", f.CAFile)
		}
		tc.RootCAs = pool
	}
	if f.CertFile != "" || f.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file/tls.key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
