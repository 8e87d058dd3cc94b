package runtime_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/ports"
)

// orderedConfig is testConfig with the test binding ordered by the
// "device" metadata.
func orderedConfig(concurrency int) config.Config {
	cfg := testConfig()
	b := cfg.Handlers["test"]
	b.Concurrency = concurrency
	b.OrderBy = "{device}"
	cfg.Handlers["test"] = b
	return cfg
}

// keyed is a message of device key with sequence number seq.
func keyed(key string, seq int) *message.Message {
	msg := message.NewMessage(fmt.Sprintf("%s-%d", key, seq), []byte(strconv.Itoa(seq)))
	if key != "" {
		msg.Metadata.Set("device", key)
	}
	return msg
}

// handledLog records what a handler handled, per key, and fails the test
// when one key is handled twice at once.
type handledLog struct {
	t      *testing.T
	mu     sync.Mutex
	active map[string]bool
	seqs   map[string][]int
	n      int
	most   int // most handlers at once
	now    int
	total  chan struct{} // closed when n reaches want
	want   int
}

func newHandledLog(t *testing.T, want int) *handledLog {
	return &handledLog{t: t, active: map[string]bool{}, seqs: map[string][]int{}, total: make(chan struct{}), want: want}
}

// begin notes msg's handling; end its return.
func (l *handledLog) begin(msg ports.Message) (key string, seq int) {
	key = msg.Attributes["device"]
	seq, _ = strconv.Atoi(string(msg.Payload))
	l.mu.Lock()
	defer l.mu.Unlock()
	if key != "" && l.active[key] {
		l.t.Errorf("key %s: message %d handled while another of the key runs", key, seq)
	}
	l.active[key] = key != ""
	l.now++
	l.most = max(l.most, l.now)
	return key, seq
}

func (l *handledLog) end(key string, seq int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active[key] = false
	l.now--
	if !ok {
		return
	}
	l.seqs[key] = append(l.seqs[key], seq)
	l.n++
	if l.n == l.want {
		close(l.total)
	}
}

func (l *handledLog) wait(what string) {
	l.t.Helper()
	select {
	case <-l.total:
	case <-time.After(30 * time.Second):
		l.mu.Lock()
		defer l.mu.Unlock()
		l.t.Fatalf("%s: %d messages handled, want %d", what, l.n, l.want)
	}
}

func (l *handledLog) snapshot() map[string][]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]int{}
	for k, v := range l.seqs {
		out[k] = slices.Clone(v)
	}
	return out
}

// checkInOrder fails unless each key's messages 1..n were handled once each,
// in order.
func checkInOrder(t *testing.T, seqs map[string][]int, keys []string, n int) {
	t.Helper()
	for _, k := range keys {
		got := seqs[k]
		if len(got) != n {
			t.Errorf("key %s: handled %v, want 1..%d once each", k, got, n)
			continue
		}
		for i, s := range got {
			if s != i+1 {
				t.Errorf("key %s: handled %v, want 1..%d in order", k, got, n)
				break
			}
		}
	}
}

// Messages of one key are handled one at a time in arrival order while
// different keys run in parallel on the workers.
func TestOrderedPerKeyUnderConcurrency(t *testing.T) {
	const keys, perKey, workers = 40, 25, 8
	broker := newBroker(t)
	log := newHandledLog(t, keys*perKey)
	startRuntime(t, orderedConfig(workers), broker, func(_ context.Context, _ ports.Publisher, msg ports.Message) error {
		key, seq := log.begin(msg)
		time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond) // handler latency, not synchronisation
		log.end(key, seq, true)
		return nil
	})
	var names []string
	for k := range keys {
		names = append(names, fmt.Sprint("d", k))
	}
	for s := 1; s <= perKey; s++ {
		for _, k := range names {
			if err := broker.Publish(inTopic, keyed(k, s)); err != nil {
				t.Fatal(err)
			}
		}
	}
	log.wait("ordered")
	checkInOrder(t, log.snapshot(), names, perKey)
	if log.most < 2 {
		t.Errorf("at most %d handlers ran at once, want keys in parallel", log.most)
	}
}

// A message that is retrying holds its key: the next message of the key
// waits for it, while the other keys flow.
func TestOrderedRetryingKeyBlocksOnlyItself(t *testing.T) {
	broker := newBroker(t)
	cfg := orderedConfig(4)
	cfg.Retry = config.RetryConfig{MaxRetries: 1_000_000, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, Multiplier: 2}
	var release atomic.Bool
	var attempts atomic.Int32
	const others = 200
	log := newHandledLog(t, others+2)
	startRuntime(t, cfg, broker, func(_ context.Context, _ ports.Publisher, msg ports.Message) error {
		key, seq := log.begin(msg)
		if key == "stuck" && seq == 1 && !release.Load() {
			attempts.Add(1)
			log.end(key, seq, false)
			return fmt.Errorf("downstream unavailable")
		}
		log.end(key, seq, true)
		return nil
	})
	for _, m := range []*message.Message{keyed("stuck", 1), keyed("stuck", 2)} {
		if err := broker.Publish(inTopic, m); err != nil {
			t.Fatal(err)
		}
	}
	for i := range others {
		if err := broker.Publish(inTopic, keyed(fmt.Sprint("k", i%10), i/10+1)); err != nil {
			t.Fatal(err)
		}
	}
	// On a busy machine the others can all be handled before the stuck
	// message's second attempt: wait for both.
	waitFor(t, "the other keys to be handled and the stuck message retried", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		return log.n == others && attempts.Load() >= 2
	})
	if got := log.snapshot()["stuck"]; len(got) != 0 {
		t.Fatalf("key stuck: handled %v while its first message retried, want nothing", got)
	}
	release.Store(true)
	log.wait("after the retry succeeded")
	checkInOrder(t, log.snapshot(), []string{"stuck"}, 2)
}

// feedTransport is the memory transport (for publishing and poison) whose
// subscribers deliver what the test sends on feed, unbuffered, so that
// the test sees when intake pauses. Close closes the channel.
type feedTransport struct {
	*memory.Transport
	feed chan *message.Message
	once *sync.Once
}

func (f feedTransport) Subscriber(transport.SubscriberConfig) (message.Subscriber, error) {
	return feedSubscriber(f), nil
}

type feedSubscriber feedTransport

func (f feedSubscriber) Subscribe(context.Context, string) (<-chan *message.Message, error) {
	return f.feed, nil
}

func (f feedSubscriber) Close() error {
	f.once.Do(func() { close(f.feed) })
	return nil
}

func startFeedRuntime(t *testing.T, cfg config.Config, registry *prometheus.Registry, handle func(ports.Message) error) (chan<- *message.Message, *runtime.Runtime) {
	t.Helper()
	feed := make(chan *message.Message)
	ft := feedTransport{Transport: newBroker(t), feed: feed, once: &sync.Once{}}
	opener := runtime.Opener{Name: config.TransportMemory, Open: func(ctx context.Context) (transport.Transport, error) {
		if err := ft.Open(ctx); err != nil {
			return nil, err
		}
		return ft, nil
	}}
	h := ports.HandlerFunc{HandlerName: "test", Func: func(_ context.Context, msg ports.Message) error { return handle(msg) }}
	params := runtime.Params{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Transports: []runtime.Opener{opener}, Handlers: []ports.Handler{h}}
	if registry != nil {
		params.Registry = registry
	}
	rt, err := runtime.New(params)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background()) })
	return feed, rt
}

// At the bound on waiting messages, per key or in total, the consumer
// stops taking messages; once the handlers move on it takes them again,
// and every message is handled once, in order per key.
func TestOrderedBoundPausesIntake(t *testing.T) {
	tests := []struct {
		name               string
		maxWaiting, perKey int
		// taken are the messages the consumer must take before it
		// pauses; blocked the one it must not take.
		taken   []*message.Message
		blocked *message.Message
	}{
		{
			name: "per key", maxWaiting: 10, perKey: 2,
			// a1 runs, a2 and a3 wait behind it, a4 is held for its key
			taken:   []*message.Message{keyed("a", 1), keyed("a", 2), keyed("a", 3), keyed("a", 4)},
			blocked: keyed("a", 5),
		},
		{
			name: "in total", maxWaiting: 3, perKey: 16,
			// b1 and c1 run on the two workers, d1, e1, f1 wait for one
			taken:   []*message.Message{keyed("b", 1), keyed("c", 1), keyed("d", 1), keyed("e", 1), keyed("f", 1)},
			blocked: keyed("g", 1),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := orderedConfig(2)
			b := cfg.Handlers["test"]
			b.OrderMaxWaiting, b.OrderMaxWaitingPerKey = tt.maxWaiting, tt.perKey
			cfg.Handlers["test"] = b
			release := make(chan struct{})
			log := newHandledLog(t, len(tt.taken)+1)
			feed, _ := startFeedRuntime(t, cfg, nil, func(msg ports.Message) error {
				key, seq := log.begin(msg)
				<-release
				log.end(key, seq, true)
				return nil
			})
			for _, m := range tt.taken {
				select {
				case feed <- m:
				case <-time.After(10 * time.Second):
					t.Fatalf("the consumer did not take %s below its bounds", m.UUID)
				}
			}
			// A pause is the absence of an event: give the consumer time
			// to take the message it must not take.
			select {
			case feed <- tt.blocked:
				t.Fatalf("the consumer took %s beyond its bound", tt.blocked.UUID)
			case <-time.After(300 * time.Millisecond):
			}
			close(release)
			select {
			case feed <- tt.blocked:
			case <-time.After(10 * time.Second):
				t.Fatalf("the consumer did not resume taking messages")
			}
			log.wait("after the pause")
			seqs := log.snapshot()
			for _, m := range append(tt.taken, tt.blocked) {
				want, _ := strconv.Atoi(string(m.Payload))
				if got := seqs[m.Metadata.Get("device")]; len(got) < want || got[want-1] != want {
					t.Errorf("%s: key handled %v, want it in order, once each", m.UUID, got)
				}
			}
			for _, m := range append(tt.taken, tt.blocked) {
				select {
				case <-m.Acked():
				case <-time.After(10 * time.Second):
					t.Fatalf("%s was not acked", m.UUID)
				}
			}
		})
	}
}

// A message without the key's attributes is handled, unordered, and
// counted.
func TestOrderedUnkeyedCounted(t *testing.T) {
	registry := prometheus.NewRegistry()
	log := newHandledLog(t, 6)
	feed, _ := startFeedRuntime(t, orderedConfig(4), registry, func(msg ports.Message) error {
		key, seq := log.begin(msg)
		log.end(key, seq, true)
		return nil
	})
	for i := 1; i <= 3; i++ {
		feed <- keyed("", i)
		feed <- keyed("a", i)
	}
	log.wait("keyed and unkeyed")
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got, ok := sample(families, "hexmill_messages_without_order_key_total", map[string]string{"handler_name": "test"})
	if !ok || got != 3 {
		t.Fatalf("messages_without_order_key_total = %v (found %v), want 3", got, ok)
	}
	checkInOrder(t, log.snapshot(), []string{"a"}, 3)
}

// Stop lets the running message finish and hands the waiting ones back:
// the next start handles them, in order, and nothing twice.
func TestOrderedStopHandsBackWaiting(t *testing.T) {
	broker := newBroker(t)
	cfg := orderedConfig(2)
	entered := make(chan struct{})
	release := make(chan struct{})
	log := newHandledLog(t, 5)
	first := startRuntime(t, cfg, broker, func(_ context.Context, _ ports.Publisher, msg ports.Message) error {
		key, seq := log.begin(msg)
		if seq == 1 {
			close(entered)
			<-release
		}
		log.end(key, seq, true)
		return nil
	})
	for s := 1; s <= 5; s++ {
		if err := broker.Publish(inTopic, keyed("a", s)); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	waitFor(t, "the waiting messages to reach the consumer", func() bool { return broker.Depth(inTopic, group) == 0 })
	stopped := make(chan error, 1)
	go func() { stopped <- first.Stop(context.Background()) }()
	waitFor(t, "the waiting messages to be handed back", func() bool { return broker.Depth(inTopic, group) == 4 })
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("stop: %v", err)
	}
	if got := log.snapshot()["a"]; !slices.Equal(got, []int{1}) {
		t.Fatalf("before stop: handled %v, want [1]", got)
	}
	startRuntime(t, cfg, broker, func(_ context.Context, _ ports.Publisher, msg ports.Message) error {
		key, seq := log.begin(msg)
		log.end(key, seq, true)
		return nil
	})
	log.wait("after the restart")
	checkInOrder(t, log.snapshot(), []string{"a"}, 5)
}
