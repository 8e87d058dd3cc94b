package aliyun

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hexmill/hexmill/integration"
)

// Aliyun's endpoint speaks TLS: through a TLS-terminating proxy in front of
// the signing broker, a consumer that trusts the proxy's certificate
// connects and receives (the handshake and every frame over the adapter's
// queued socket); one that does not is refused, naming the certificate.
func TestTLSConnectAndReceive(t *testing.T) {
	addr := signingBroker(t)
	cert, roots := selfSignedLoopback(t)
	proxy := integration.NewTLSProxy(t, addr, &tls.Config{Certificates: []tls.Certificate{cert}}).Addr()
	p := newPusher(t, addr)

	t.Run("trusted", func(t *testing.T) {
		queue := uniqueQueue("tls")
		cfg := testConfig(t, proxy, queue)
		cfg.TLS = nil // on, the default
		c := newConsumer(t, cfg, func(c *Transport) { c.tlsRoots = roots })
		sub, err := c.Subscriber(SubscriberConfig{Handler: "telemetry", Concurrency: 4})
		if err != nil {
			t.Fatal(err)
		}
		out, err := sub.Subscribe(t.Context(), "/+/+/thing/event/property/post")
		if err != nil {
			t.Fatalf("subscribe over TLS: %v", err)
		}
		for i := range 100 {
			id := "tls-" + strconv.Itoa(i)
			if err := p.push(queue, "/pk1/dev-1/thing/event/property/post", id, []byte(id), nil); err != nil {
				t.Fatal(err)
			}
			m := receive(t, out)
			if m.UUID != id || string(m.Payload) != id {
				t.Fatalf("got %s %q, want %s", m.UUID, m.Payload, id)
			}
			m.Ack()
		}
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		cfg := testConfig(t, proxy, uniqueQueue("tls-untrusted"))
		cfg.TLS = nil
		cfg.StartTimeout = 5 * time.Second
		c := newConsumer(t, cfg) // the system's roots
		sub, err := c.Subscriber(SubscriberConfig{Handler: "telemetry", Concurrency: 1})
		if err != nil {
			t.Fatal(err)
		}
		_, err = sub.Subscribe(t.Context(), "/+/+/thing/event/property/post")
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("subscribe with an untrusted certificate: %v; want an error naming the certificate", err)
		}
		t.Logf("refused: %v", err)
	})
}

// selfSignedLoopback returns a certificate for 127.0.0.1 and a pool that
// trusts it.
func selfSignedLoopback(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "aliyun test endpoint"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
}
