package mqtt_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/integration"
)

// TestBrokerRestart is watermill's TestReconnect with its bookkeeping
// synchronised: 10 000 messages from 100 publishers while the private
// broker restarts at 1/3 and 1/2; every message whose publish returned nil
// is received.
func TestBrokerRestart(t *testing.T) {
	broker := integration.StartMosquitto(t, "")
	cfg := testConfig(t, broker.URL(), "")
	pub := newPublisher(t, cfg)
	sub := newSubscriber(t, cfg, mqtt.SubscriberConfig{Concurrency: 64})
	topic := "restart-" + watermill.NewShortUUID()
	out, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	const total, publishers = 10000, 100
	var (
		mu        sync.Mutex
		published = map[string]bool{}
		wg        sync.WaitGroup
		restarts  sync.WaitGroup
	)
	work := make(chan struct{})
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				m := message.NewMessage(watermill.NewUUID(), []byte("x"))
				for pub.Publish(topic, m) != nil {
				}
				mu.Lock()
				published[m.UUID] = true
				mu.Unlock()
			}
		}()
	}
	// The restarts run one after the other, the second only once the
	// subscriber has reconnected after the first: two overlapping restarts
	// of a slow container are one outage.
	restart := make(chan struct{})
	restarts.Add(1)
	go func() { // owned: the producer below waits for restarts
		defer restarts.Done()
		for n := uint64(2); n <= 3; n++ {
			if _, ok := <-restart; !ok {
				return
			}
			broker.Restart()
			for sub.Connections() < n {
				select {
				case <-time.After(10 * time.Millisecond):
				case <-t.Context().Done():
					return
				}
			}
		}
	}()
	received := map[string]bool{}
	done := make(chan struct{})
	go func() { // owned: the test waits for done
		defer close(done)
		for i := range total {
			if i == total/3 || i == total/2 {
				restart <- struct{}{}
			}
			work <- struct{}{}
		}
		close(work)
		close(restart)
		wg.Wait()
		restarts.Wait()
	}()
	deadline := time.After(90 * time.Second)
	for {
		select {
		case m := <-out:
			received[m.UUID] = true
			m.Ack()
			continue
		case <-done:
		case <-deadline:
			t.Fatalf("received %d of %d", len(received), total)
		}
		break
	}
	mu.Lock()
	defer mu.Unlock()
	for len(received) < len(published) || !containsAll(received, published) {
		select {
		case m := <-out:
			received[m.UUID] = true
			m.Ack()
		case <-deadline:
			missing := 0
			for id := range published {
				if !received[id] {
					missing++
				}
			}
			t.Fatalf("%d published messages never received", missing)
		}
	}
	if sub.Connections() < 3 {
		t.Errorf("%d connections: the broker restarts were not seen", sub.Connections())
	}
}

func containsAll(got, want map[string]bool) bool {
	for id := range want {
		if !got[id] {
			return false
		}
	}
	return true
}

type certs struct{ caPEM, caKey, serverCert, serverKey, clientCert, clientKey, otherCA string }

// makeCerts writes a CA, a server certificate for 127.0.0.1, a client
// certificate, and an unrelated CA into dir.
func makeCerts(t *testing.T, dir string) certs {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	newCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, k, der
	}
	ca, caKey, caDER := newCA("hexmill test CA")
	_, _, otherDER := newCA("some other CA")
	leaf := func(cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	srvDER, srvKey := leaf("127.0.0.1", x509.ExtKeyUsageServerAuth)
	cliDER, cliKey := leaf("hexmill-client", x509.ExtKeyUsageClientAuth)
	return certs{
		caPEM: write("ca.pem", "CERTIFICATE", caDER), caKey: write("ca.key", "EC PRIVATE KEY", keyDER(caKey)),
		serverCert: write("server.pem", "CERTIFICATE", srvDER), serverKey: write("server.key", "EC PRIVATE KEY", keyDER(srvKey)),
		clientCert: write("client.pem", "CERTIFICATE", cliDER), clientKey: write("client.key", "EC PRIVATE KEY", keyDER(cliKey)),
		otherCA: write("other-ca.pem", "CERTIFICATE", otherDER),
	}
}

// TLS against a private mosquitto: the right CA connects, a wrong CA fails
// with an error that says why, and client-certificate auth works.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	c := makeCerts(t, dir)
	tlsPort, mtlsPort := integration.FreePort(t), integration.FreePort(t)
	broker := integration.StartMosquitto(t, fmt.Sprintf(`
listener %d 127.0.0.1
cafile %s
certfile %s
keyfile %s
listener %d 127.0.0.1
cafile %s
certfile %s
keyfile %s
require_certificate true
`, tlsPort, c.caPEM, c.serverCert, c.serverKey, mtlsPort, c.caPEM, c.serverCert, c.serverKey), tlsPort, mtlsPort)
	_ = broker

	cases := []struct {
		name    string
		port    int
		tls     mqtt.TLSConfig
		wantErr string // "" for success
	}{
		{"right CA", tlsPort, mqtt.TLSConfig{CAFile: c.caPEM}, ""},
		{"wrong CA", tlsPort, mqtt.TLSConfig{CAFile: c.otherCA}, "certificate signed by unknown authority"},
		{"client certificate", mtlsPort, mqtt.TLSConfig{CAFile: c.caPEM, CertFile: c.clientCert, KeyFile: c.clientKey}, ""},
		{"client certificate missing", mtlsPort, mqtt.TLSConfig{CAFile: c.caPEM}, "last connection attempt"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, fmt.Sprintf("mqtts://127.0.0.1:%d", tc.port), "")
			cfg.TLS = tc.tls
			cfg.PublishTimeout = 2 * time.Second
			cfg.ReconnectMin = 100 * time.Millisecond
			topic := "tls-" + watermill.NewShortUUID()
			pub := newPublisher(t, cfg)
			if tc.wantErr != "" {
				err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), nil))
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("publish: %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			sub := newSubscriber(t, cfg, mqtt.SubscriberConfig{Concurrency: 1})
			out, err := sub.Subscribe(context.Background(), topic)
			if err != nil {
				t.Fatal(err)
			}
			sent := message.NewMessage(watermill.NewUUID(), []byte("over tls"))
			if err := pub.Publish(topic, sent); err != nil {
				t.Fatal(err)
			}
			if got := receive(t, out, 1, 10*time.Second)[0]; got.UUID != sent.UUID {
				t.Errorf("got %s, want %s", got.UUID, sent.UUID)
			}
		})
	}
}
