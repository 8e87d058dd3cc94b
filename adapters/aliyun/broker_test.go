package aliyun

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/hexmill/hexmill/adapters/transport/secret"
	"github.com/hexmill/hexmill/integration"
)

// The signature-checking broker: a private RabbitMQ node (rabbitmq_amqp1_0
// and rabbitmq_auth_backend_http) whose HTTP auth backend is verifier, a
// server in this test that checks Aliyun's user name, timestamp and
// signature the way Aliyun does. Internal users (guest) keep working: the
// test publisher uses guest. One node serves the whole package.

const (
	testAccessKeyID     = "LTAI-test-ak"
	testAccessKeySecret = "test-secret-0123456789"
	testSTSAccessKeyID  = "STS.test-ak"
	testSTSSecret       = "sts-secret-abcdef"
	testSTSToken        = "sts-token-xyz/+="
	testConsumerGroup   = "cg-test"
)

var (
	brokerOnce sync.Once
	brokerNode *integration.RabbitMQNode
	brokerErr  error
	verifier   = &authVerifier{secrets: map[string]string{testAccessKeyID: testAccessKeySecret, testSTSAccessKeyID: testSTSSecret}, tokens: map[string]string{testSTSAccessKeyID: testSTSToken}}
	authServer *http.Server
	authDone   = make(chan struct{})
)

func TestMain(m *testing.M) {
	code := m.Run()
	if brokerNode != nil {
		brokerNode.Stop()
		_ = authServer.Close()
		<-authDone
		_ = os.RemoveAll(brokerDir)
	}
	// Every goroutine the adapter starts has an owner that waits for it.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left after the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

var brokerDir string

// signingBroker returns the address of the private node, starting it on
// first use; the test is skipped when RabbitMQ is not installed.
func signingBroker(t testing.TB) string {
	t.Helper()
	brokerOnce.Do(func() {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			brokerErr = err
			return
		}
		authServer = &http.Server{Handler: verifier}
		go func() { defer close(authDone); _ = authServer.Serve(l) }()
		base := "http://" + l.Addr().String()
		brokerDir, err = os.MkdirTemp("", "hexmill-aliyun-rabbit-")
		if err != nil {
			brokerErr = err
			return
		}
		brokerNode, brokerErr = integration.StartRabbitMQNode(integration.RabbitMQNodeOptions{
			Dir:     brokerDir,
			Plugins: []string{"rabbitmq_amqp1_0", "rabbitmq_auth_backend_http"},
			Config: strings.Join([]string{
				"auth_backends.1 = internal",
				"auth_backends.2 = http",
				"auth_http.http_method = post",
				"auth_http.user_path = " + base + "/auth/user",
				"auth_http.vhost_path = " + base + "/auth/vhost",
				"auth_http.resource_path = " + base + "/auth/resource",
				"auth_http.topic_path = " + base + "/auth/topic",
			}, "\n"),
		})
		if brokerErr != nil {
			_ = authServer.Close()
			<-authDone
			authServer = nil
		}
	})
	if errors.Is(brokerErr, integration.ErrNoRabbitMQServer) {
		t.Skipf("signature-checking broker: %v", brokerErr)
	}
	if brokerErr != nil {
		t.Fatalf("signature-checking broker: %v", brokerErr)
	}
	return brokerNode.Addr
}

// authVerifier is rabbitmq_auth_backend_http's backend: it allows a user
// whose name and password are a valid Aliyun signature, made within five
// minutes, and records every user name it saw.
type authVerifier struct {
	secrets, tokens map[string]string

	mu      sync.Mutex
	allowed []string // user names allowed, in order
	denied  []string
}

func (v *authVerifier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	if r.URL.Path != "/auth/user" {
		fmt.Fprint(w, "allow") // vhost, resource, topic: an authenticated user may do anything
		return
	}
	user, password := r.Form.Get("username"), r.Form.Get("password")
	v.mu.Lock()
	defer v.mu.Unlock()
	if password == "" && slices.Contains(v.allowed, user) {
		// RabbitMQ's AMQP 1.0 session re-checks the user it already
		// authenticated, without the password.
		fmt.Fprint(w, "allow")
		return
	}
	err := v.verify(user, password, time.Now())
	if err != nil {
		v.denied = append(v.denied, user)
		fmt.Fprint(w, "deny")
		return
	}
	v.allowed = append(v.allowed, user)
	fmt.Fprint(w, "allow")
}

// verify checks an Aliyun user name and password independently of the
// adapter's code.
func (v *authVerifier) verify(user, password string, now time.Time) error {
	clientID, rest, ok := strings.Cut(user, "|")
	if !ok || clientID == "" || !strings.HasSuffix(rest, "|") {
		return errors.New("user name is not clientId|params|")
	}
	params := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(rest, "|"), ",") {
		k, val, _ := strings.Cut(kv, "=")
		params[k] = val
	}
	ts, err := strconv.ParseInt(params["timestamp"], 10, 64)
	if err != nil {
		return errors.New("timestamp missing")
	}
	if d := now.Sub(time.UnixMilli(ts)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %d is not epoch milliseconds near now", ts)
	}
	if params["consumerGroupId"] != testConsumerGroup {
		return errors.New("unknown consumer group")
	}
	ak := params["authId"]
	secretKey, ok := v.secrets[ak]
	if !ok {
		return errors.New("unknown authId")
	}
	toSign := "authId=" + ak + "&timestamp=" + params["timestamp"]
	switch params["authMode"] {
	case "aksign":
	case "ststoken":
		if params["securityToken"] != v.tokens[ak] {
			return errors.New("wrong security token")
		}
		toSign = "authId=" + ak + "&securityToken=" + params["securityToken"] + "&timestamp=" + params["timestamp"]
	default:
		return errors.New("unknown authMode")
	}
	var h func() hash.Hash
	switch params["signMethod"] {
	case "hmacsha1":
		h = sha1.New
	case "hmacsha256":
		h = sha256.New
	case "hmacmd5":
		h = md5.New
	default:
		return errors.New("unknown signMethod")
	}
	mac := hmac.New(h, []byte(secretKey))
	mac.Write([]byte(toSign))
	if !hmac.Equal([]byte(base64.StdEncoding.EncodeToString(mac.Sum(nil))), []byte(password)) {
		return errors.New("signature mismatch")
	}
	return nil
}

// allowedFor returns the user names allowed for clientID so far.
func (v *authVerifier) allowedFor(clientID string) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []string
	for _, u := range v.allowed {
		if strings.HasPrefix(u, clientID+"|") {
			out = append(out, u)
		}
	}
	return out
}

func (v *authVerifier) deniedFor(clientID string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, u := range v.denied {
		if strings.HasPrefix(u, clientID+"|") {
			n++
		}
	}
	return n
}

var clientSeq struct {
	sync.Mutex
	n int
}

// testConfig is a consumer configuration for the private node, reading
// queue, with a client ID unique in the package.
func testConfig(t testing.TB, addr, queue string) Config {
	t.Helper()
	host, portS, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portS)
	off := false
	clientSeq.Lock()
	clientSeq.n++
	id := fmt.Sprintf("t%d-%d", os.Getpid(), clientSeq.n)
	clientSeq.Unlock()
	return Config{
		Host: host, Port: port, TLS: &off,
		AccessKeyID: testAccessKeyID, AccessKeySecret: secret.String(testAccessKeySecret),
		ConsumerGroupID: testConsumerGroup, ClientID: id,
		SignMethod: SignHMACSHA256, Credit: 50,
		SourceAddress: "/queue/" + queue, UnmatchedDelay: 50 * time.Millisecond,
		StartTimeout: 20 * time.Second,
	}
}

func newConsumer(t testing.TB, cfg Config, opts ...Option) *Transport {
	t.Helper()
	c, err := New(cfg, watermill.NopLogger{}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// pusher sends messages the way Aliyun pushes them: the payload as a data
// section, topic / messageId / generateTime as application properties. It
// authenticates as guest (an internal user of the node).
type pusher struct {
	addr    string
	mu      sync.Mutex
	conn    *amqp.Conn
	session *amqp.Session
	senders map[string]*amqp.Sender
}

func newPusher(t testing.TB, addr string) *pusher {
	t.Helper()
	p := &pusher{addr: addr}
	if err := p.connect(); err != nil {
		t.Fatalf("pusher: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// connect opens the pusher's connection and session. p.mu is held, or p
// is not shared yet.
func (p *pusher) connect() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://"+p.addr, &amqp.ConnOptions{SASLType: amqp.SASLTypePlain("guest", "guest")})
	if err != nil {
		return err
	}
	session, err := conn.NewSession(ctx, nil)
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("session: %w", err)
	}
	p.conn, p.session, p.senders = conn, session, map[string]*amqp.Sender{}
	return nil
}

func (p *pusher) sender(queue string) (*amqp.Sender, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.senders[queue]; ok {
		return s, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Unsettled sends: each Send returns once the broker has the message.
	s, err := p.session.NewSender(ctx, "/queue/"+queue, &amqp.SenderOptions{SettlementMode: amqp.SenderSettleModeUnsettled.Ptr()})
	if err != nil {
		return nil, err
	}
	p.senders[queue] = s
	return s, nil
}

// push sends one message. When RabbitMQ closes the pusher's connection
// with an internal error, it connects again and sends once more: the
// AMQP 1.0 plugin of 3.10 did so once in CI ("noproc", while the consumer
// under test re-attached its link), and the pusher is the test's
// device, not what is tested. A message the broker took before the error
// may then arrive twice.
func (p *pusher) push(queue, topic, id string, payload []byte, md map[string]string) error {
	err := p.pushOnce(queue, topic, id, payload, md)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Condition != amqp.ErrCondInternalError {
		return err
	}
	p.mu.Lock()
	_ = p.conn.Close()
	cerr := p.connect()
	p.mu.Unlock()
	if cerr != nil {
		return fmt.Errorf("%w; reconnecting: %w", err, cerr)
	}
	return p.pushOnce(queue, topic, id, payload, md)
}

func (p *pusher) pushOnce(queue, topic, id string, payload []byte, md map[string]string) error {
	s, err := p.sender(queue)
	if err != nil {
		return err
	}
	m := amqp.NewMessage(payload)
	m.ApplicationProperties = map[string]any{"topic": topic, "messageId": id, "generateTime": time.Now().UnixMilli()}
	for k, v := range md {
		m.ApplicationProperties[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return s.Send(ctx, m, nil)
}

func (p *pusher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn.Close()
}

// pushMany sends n messages from workers goroutines over p's session and
// returns their IDs (nil after reporting an error).
func pushMany(t testing.TB, p *pusher, queue string, n, workers int, topicOf func(i int) string) map[string]bool {
	t.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				ids[i] = fmt.Sprintf("m-%d-%s", i, watermill.NewShortUUID())
				if err := p.push(queue, topicOf(i), ids[i], []byte(`{"n":`+strconv.Itoa(i)+`}`), nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Errorf("push: %v", err) // not Fatal: callers run it in goroutines
		return nil
	}
	set := make(map[string]bool, n)
	for _, id := range ids {
		set[id] = true
	}
	return set
}

// collect acks messages from out until want holds every ID or timeout,
// and returns the IDs seen.
func collect(t testing.TB, out <-chan *message.Message, want map[string]bool, timeout time.Duration) map[string]int {
	t.Helper()
	seen := map[string]int{}
	missing := len(want)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for missing > 0 {
		select {
		case m, ok := <-out:
			if !ok {
				t.Fatalf("output closed with %d of %d missing", missing, len(want))
			}
			if want[m.UUID] && seen[m.UUID] == 0 {
				missing--
			}
			seen[m.UUID]++
			m.Ack()
		case <-deadline.C:
			t.Fatalf("%d of %d messages missing after %s", missing, len(want), timeout)
		}
	}
	return seen
}

func uniqueQueue(prefix string) string {
	return fmt.Sprintf("hexmill-aliyun-%s-%s", prefix, watermill.NewShortUUID())
}
