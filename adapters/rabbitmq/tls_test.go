package rabbitmq_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
)

// TLS through a TLS-terminating proxy in front of the shared broker: the
// adapter verifies the server against tls.ca_file and tls.server_name and
// presents its client certificate; a wrong CA or a missing client
// certificate fails Connect with a clear error.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "hexmill test CA")
	otherCA := newCA(t, "some other CA")
	serverCert := ca.issue(t, "localhost", false)
	clientCert := ca.issue(t, "hexmill-test-client", true)
	files := map[string][]byte{
		"ca.pem": ca.certPEM, "other-ca.pem": otherCA.certPEM,
		"client.pem": clientCert.certPEM, "client-key.pem": clientCert.keyPEM,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	proxy := newTLSProxy(t, brokerAddr(t), serverCert.tls(t), ca.pool())
	u := strings.Replace(strings.Replace(brokerURL(t), "amqp://", "amqps://", 1), brokerAddr(t), proxy.addr, 1)

	for _, tc := range []struct {
		name    string
		tls     rabbitmq.TLSConfig
		wantErr string // "" means the connection works
	}{
		{"verified server, client certificate", rabbitmq.TLSConfig{CAFile: "ca.pem", CertFile: "client.pem", KeyFile: "client-key.pem", ServerName: "localhost"}, ""},
		{"wrong CA", rabbitmq.TLSConfig{CAFile: "other-ca.pem", CertFile: "client.pem", KeyFile: "client-key.pem", ServerName: "localhost"}, "not signed by a CA in tls.ca_file"},
		{"wrong server name", rabbitmq.TLSConfig{CAFile: "ca.pem", CertFile: "client.pem", KeyFile: "client-key.pem", ServerName: "broker.example"}, "set tls.server_name"},
		{"no client certificate", rabbitmq.TLSConfig{CAFile: "ca.pem", ServerName: "localhost"}, "set tls.cert_file and tls.key_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.tls
			for _, p := range []*string{&cfg.CAFile, &cfg.CertFile, &cfg.KeyFile} {
				if *p != "" {
					*p = filepath.Join(dir, *p)
				}
			}
			c, err := rabbitmq.New(rabbitmq.Config{URL: rabbitmq.URL(u), TLS: cfg}, watermill.NopLogger{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = c.Open(ctx)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Connect: %v", err)
				}
				if err := c.Ready(); err != nil {
					t.Fatalf("Ready: %v", err)
				}
				if got := proxy.lastClient(); got != "hexmill-test-client" {
					t.Fatalf("proxy saw client certificate %q; want hexmill-test-client", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Connect: %v; want an error saying %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "guest:guest") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

type testCert struct{ certPEM, keyPEM []byte }

func newCA(t *testing.T, name string) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func (ca *testCA) issue(t *testing.T, name string, client bool) testCert {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.DNSNames = []string{name}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	}
}

func (c testCert) tls(t *testing.T) tls.Certificate {
	cert, err := tls.X509KeyPair(c.certPEM, c.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// tlsProxy terminates TLS, requires a client certificate signed by the
// test CA, and forwards the plain stream to the broker.
type tlsProxy struct {
	addr   string
	mu     sync.Mutex
	client string // common name of the last verified client certificate
}

func (p *tlsProxy) lastClient() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.client
}

func newTLSProxy(t *testing.T, target string, cert tls.Certificate, clientCAs *x509.CertPool) *tlsProxy {
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &tlsProxy{addr: l.Addr().String()}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					return
				}
				if peers := tc.ConnectionState().PeerCertificates; len(peers) > 0 {
					p.mu.Lock()
					p.client = peers[0].Subject.CommonName
					p.mu.Unlock()
				}
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				track(up)
				defer up.Close()
				done := make(chan struct{})
				go func() {
					defer close(done)
					_, _ = io.Copy(up, tc)
					_ = up.Close()
				}()
				_, _ = io.Copy(tc, up)
				_ = tc.Close()
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}
