package runtime_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/ports"
)

// A payload above max_message_bytes (the transport's, or the binding's
// override) never reaches the handler: it is poisoned with reason
// too_large and the first 4 KiB of its payload; a payload at the limit is
// handled, and so is the message behind the large one.
func TestTooLargeIsPoisonedUnhandled(t *testing.T) {
	const limit = 8 << 10
	tests := []struct {
		name      string
		transport memory.Config
		binding   int
	}{
		{"transport limit", memory.Config{MaxMessageBytes: limit}, 0},
		{"binding override", memory.Config{MaxMessageBytes: 4 * limit}, limit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			broker, err := memory.New(tt.transport, watermill.NopLogger{})
			if err != nil {
				t.Fatal(err)
			}
			cfg := testConfig()
			b := cfg.Handlers["test"]
			b.MaxMessageBytes = tt.binding
			cfg.Handlers["test"] = b
			var mu sync.Mutex
			handled := map[string]int{}
			startRuntime(t, cfg, broker, func(_ context.Context, _ ports.Publisher, msg ports.Message) error {
				mu.Lock()
				handled[msg.ID] = len(msg.Payload)
				mu.Unlock()
				return nil
			})
			big := strings.Repeat("9", limit+1)
			publish(t, broker, inTopic, "big", big)
			publish(t, broker, inTopic, "at-limit", strings.Repeat("1", limit))

			poisoned := receive(t, broker, poisonTopic, 1)[0]
			if poisoned.UUID != "big" || string(poisoned.Payload) != big[:transport.PoisonPayloadBytes] {
				t.Fatalf("poisoned %s with %d bytes, want big with its first %d", poisoned.UUID, len(poisoned.Payload), transport.PoisonPayloadBytes)
			}
			if r := poisoned.Metadata.Get(middleware.ReasonForPoisonedKey); !strings.HasPrefix(r, runtime.ReasonTooLarge+":") {
				t.Fatalf("reason %q, want %s: ...", r, runtime.ReasonTooLarge)
			}
			waitFor(t, "the message at the limit handled", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return handled["at-limit"] == limit
			})
			mu.Lock()
			defer mu.Unlock()
			if _, ok := handled["big"]; ok {
				t.Fatal("the handler got the message above max_message_bytes")
			}
		})
	}
}

// Every metadata value the framework writes on a poison copy is bounded,
// and so is what it copies from the sender: a reason quoting a huge
// payload (a number too large for a float64) and a huge sender header are
// cut to 1 KiB each, so that no broker refuses the copy.
func TestPoisonMetadataIsBounded(t *testing.T) {
	broker := newBroker(t)
	number := strings.Repeat("9", 200<<10)
	startRuntime(t, testConfig(), broker, func(_ context.Context, _ ports.Publisher, msg ports.Message) error {
		return ports.Invalid(fmt.Errorf("json: cannot unmarshal number %s into float64", msg.Payload))
	})
	msg := message.NewMessage("huge", []byte(number))
	msg.Metadata.Set("note", strings.Repeat("n", 100<<10))
	if err := broker.Publish(inTopic, msg); err != nil {
		t.Fatal(err)
	}
	poisoned := receive(t, broker, poisonTopic, 1)[0]
	if string(poisoned.Payload) != number {
		t.Fatal("the poison copy of a message under the limit lost its payload")
	}
	for k, v := range poisoned.Metadata {
		if len(v) > transport.MetadataValueBytes {
			t.Errorf("poison metadata %s has %d bytes, want at most %d", k, len(v), transport.MetadataValueBytes)
		}
	}
	if r := poisoned.Metadata.Get(middleware.ReasonForPoisonedKey); !strings.HasPrefix(r, "json: cannot unmarshal number 999") {
		t.Fatalf("reason %.80q..., want the handler's error, cut", r)
	}
}

// A message handed back (its events could not be published) more than
// max_handbacks times is poisoned with reason handed_back_too_often; with
// max_handbacks 0 (TestPublishFailureIsRedeliveredNotPoisoned) it never is.
// Between hand-backs it waits the retry backoff, growing, so that a broker
// that redelivers at once does not spin.
func TestHandedBackTooOftenIsPoisoned(t *testing.T) {
	broker := newBroker(t)
	cfg := testConfig()
	cfg.Retry = config.RetryConfig{MaxRetries: 0, InitialInterval: 20 * time.Millisecond, MaxInterval: time.Second, Multiplier: 2}
	b := cfg.Handlers["test"]
	b.MaxHandbacks = 3
	cfg.Handlers["test"] = b
	var mu sync.Mutex
	var at []time.Time
	startRuntime(t, cfg, broker, func(ctx context.Context, _ ports.Publisher, msg ports.Message) error {
		if msg.ID == "ok" {
			return nil
		}
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		return fmt.Errorf("handler: %w", broken.Publish(ctx, testEvent{Input: msg.ID}))
	})
	publish(t, broker, inTopic, "stuck", "{}")
	poisoned := receive(t, broker, poisonTopic, 1)[0]
	if r := poisoned.Metadata.Get(middleware.ReasonForPoisonedKey); poisoned.UUID != "stuck" || !strings.HasPrefix(r, runtime.ReasonHandedBackTooOften+": handed back 3 times") {
		t.Fatalf("poisoned %s, reason %q; want stuck, %s after 3", poisoned.UUID, r, runtime.ReasonHandedBackTooOften)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(at) != b.MaxHandbacks+1 {
		t.Fatalf("handled %d times, want %d (max_handbacks + 1)", len(at), b.MaxHandbacks+1)
	}
	for i := 1; i < len(at); i++ {
		want := cfg.Retry.InitialInterval << (i - 1)
		if gap := at[i].Sub(at[i-1]); gap < want {
			t.Errorf("hand-back %d redelivered after %s, want the backoff %s or more", i, gap, want)
		}
	}
}

// handler_timeout cancels an attempt that hangs: the attempt fails and is
// retried, and the message behind it is handled.
func TestHandlerTimeoutRetriesAHungHandler(t *testing.T) {
	broker := newBroker(t)
	cfg := testConfig()
	b := cfg.Handlers["test"]
	b.HandlerTimeout = 50 * time.Millisecond
	b.Concurrency = 1
	cfg.Handlers["test"] = b
	var attempts atomic.Int32
	done := make(chan string, 2)
	startRuntime(t, cfg, broker, func(ctx context.Context, _ ports.Publisher, msg ports.Message) error {
		if msg.ID == "hangs-once" && attempts.Add(1) == 1 {
			<-ctx.Done() // hangs until its context ends
			return ctx.Err()
		}
		done <- msg.ID
		return nil
	})
	publish(t, broker, inTopic, "hangs-once", "{}")
	publish(t, broker, inTopic, "next", "{}")
	for _, want := range []string{"hangs-once", "next"} {
		select {
		case got := <-done:
			if got != want {
				t.Fatalf("handled %s, want %s", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not handled: the hung attempt was never cancelled", want)
		}
	}
}

// tooLargeTransport is the memory transport whose publishers refuse every
// message as too large for the broker (a RabbitMQ header above a frame).
type tooLargeTransport struct{ *memory.Transport }

func (t tooLargeTransport) Publisher(options map[string]string) (message.Publisher, error) {
	pub, err := t.Transport.Publisher(options)
	return tooLargePublisher{pub}, err
}

type tooLargePublisher struct{ message.Publisher }

func (p tooLargePublisher) Publish(topic string, msgs ...*message.Message) error {
	if topic == outTopic {
		return fmt.Errorf("broker: %w", transport.ErrMessageTooLarge)
	}
	return p.Publisher.Publish(topic, msgs...)
}

// An event the broker refuses as too large is the message's fault, not
// the broker's: the message is retried and poisoned, never handed back
// (which would go round for ever).
func TestEventTooLargeIsPoisonedNotHandedBack(t *testing.T) {
	broker := newBroker(t)
	opener := runtime.Opener{Name: config.TransportMemory, Open: func(ctx context.Context) (transport.Transport, error) {
		if err := broker.Open(ctx); err != nil {
			return nil, err
		}
		return tooLargeTransport{broker}, nil
	}}
	pub := runtime.NewPublisher()
	var calls atomic.Int32
	h := ports.HandlerFunc{HandlerName: "test", Func: func(ctx context.Context, msg ports.Message) error {
		calls.Add(1)
		return pub.Publish(ctx, testEvent{Input: msg.ID})
	}}
	cfg := testConfig()
	rt, err := runtime.New(runtime.Params{
		Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Transports: []runtime.Opener{opener}, Handlers: []ports.Handler{h}, Publisher: pub,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer rt.Stop(context.Background())
	publish(t, broker, inTopic, "m1", "{}")
	poisoned := receive(t, broker, poisonTopic, 1)[0]
	if r := poisoned.Metadata.Get(middleware.ReasonForPoisonedKey); poisoned.UUID != "m1" || !strings.Contains(r, "too large") {
		t.Fatalf("poisoned %s with reason %q, want m1 and the broker's refusal", poisoned.UUID, r)
	}
	if got, want := calls.Load(), int32(cfg.Retry.MaxRetries+1); got != want {
		t.Fatalf("handled %d times, want %d (retried, not handed back)", got, want)
	}
}
