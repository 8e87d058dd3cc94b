// Package transporttest is the contract suite of a transport's
// subscribers (transport.Transport): how messages are handed out, settled
// and handed back on stop. Every adapter runs it against its real broker,
// beside watermill's universal suite (which checks the pub/sub side):
//
//	func TestContract(t *testing.T) {
//		transporttest.Run(t, func(t *testing.T) transporttest.Binding { ... })
//	}
//
// A transport may deliver a message more than once (at least once); the
// suite checks that none is lost, that each delivery is settled once, and
// the stop protocol. Messages are told apart by their payloads.
package transporttest

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
)

// Binding is one handler binding of the transport under test, on a topic
// or queue no other test uses.
type Binding struct {
	// Topic is what Subscribe takes.
	Topic string
	// NewSubscriber returns a subscriber of the binding with at most
	// concurrency messages unsettled. Subscribers of one Binding are one
	// consumer (one consumer group, one MQTT session): one gets what
	// another closed without settling. The suite closes each it opens.
	NewSubscriber func(t *testing.T, concurrency int) message.Subscriber
	// Publish sends each payload as one message where the binding
	// consumes, and returns once the broker has them all. The suite
	// subscribes before it publishes.
	Publish func(t *testing.T, payloads ...[]byte)
}

// Setup returns a fresh Binding for one test.
type Setup func(t *testing.T) Binding

// wait bounds every wait of the suite for something that must happen: long
// enough for a busy machine, short enough to name what did not happen.
const wait = 60 * time.Second

// Run runs the contract suite on the bindings setup makes.
func Run(t *testing.T, setup Setup) {
	tests := []struct {
		name string
		test func(t *testing.T, b Binding)
	}{
		{"SettleOnReceipt", testSettleOnReceipt},
		{"SettleAfterHandling/Settler", func(t *testing.T, b Binding) { testSettleAfterHandling(t, b, true) }},
		{"SettleAfterHandling/AckNack", func(t *testing.T, b Binding) { testSettleAfterHandling(t, b, false) }},
		{"StopWithMessagesOut", testStopWithMessagesOut},
		{"CloseAfterStop", testCloseAfterStop},
		{"ConcurrentSettles", testConcurrentSettles},
		{"SlowConsumerHoldsItsSlots", testSlowConsumer},
		{"MessageContext", testMessageContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, setup(t)) })
	}
}

// A consumer that settles each message the moment it has it (the
// runtime's way) may settle before the subscriber's own bookkeeping of the
// send has run: every message still arrives, and Close returns.
func testSettleOnReceipt(t *testing.T, b Binding) {
	const n = 3000
	sub := b.NewSubscriber(t, 20)
	out := subscribe(t, sub, transport.SettledByConsumer(context.Background()), b.Topic)
	want := payloads(t, n)
	b.Publish(t, want...)
	seen := map[string]int{}
	for len(seen) < n {
		m := receive(t, out, fmt.Sprintf("%d of %d messages", len(seen), n))
		settler(t, m).Settle(true)
		seen[string(m.Payload)]++
	}
	closeWithin(t, sub)
	checkAll(t, want, seen)
}

// Settled after handling, some with a nack first: a nacked message comes
// back, and every message ends acked. bySettler settles through the
// Settler; otherwise through Ack and Nack, as watermill's router does.
func testSettleAfterHandling(t *testing.T, b Binding, bySettler bool) {
	const n = 40
	sub := b.NewSubscriber(t, 8)
	ctx := context.Background()
	if bySettler {
		ctx = transport.SettledByConsumer(ctx)
	}
	out := subscribe(t, sub, ctx, b.Topic)
	want := payloads(t, n)
	b.Publish(t, want...)
	nack := map[string]bool{}
	for i, p := range want {
		nack[string(p)] = i%2 == 0
	}
	seen, acked := map[string]int{}, map[string]bool{}
	var handlers sync.WaitGroup
	for len(acked) < n {
		m := receive(t, out, fmt.Sprintf("%d of %d messages acked", len(acked), n))
		p := string(m.Payload)
		seen[p]++
		ok := !nack[p] || seen[p] > 1
		if ok {
			acked[p] = true
		}
		s := settler(t, m)
		handlers.Add(1)
		go func() { // a handler of its own
			defer handlers.Done()
			switch {
			case bySettler:
				s.Settle(ok)
			case ok:
				m.Ack()
			default:
				m.Nack()
			}
		}()
	}
	handlers.Wait()
	closeWithin(t, sub)
	for p, was := range nack {
		if was && seen[p] < 2 {
			t.Errorf("nacked %s was not delivered again", p)
		}
	}
}

// Stop with messages out: intake stops (the output closes, the messages
// out keep their contexts and can still be settled, once), Close hands
// back what is unsettled, and the next subscriber gets every message not
// acked.
func testStopWithMessagesOut(t *testing.T, b Binding) {
	const n, slots = 30, 10
	sub := b.NewSubscriber(t, slots)
	ctx, stopIntake := context.WithCancel(transport.SettledByConsumer(context.Background()))
	defer stopIntake()
	out := subscribe(t, sub, ctx, b.Topic)
	want := payloads(t, n)
	b.Publish(t, want...)
	var held []*message.Message
	for len(held) < slots {
		held = append(held, receive(t, out, fmt.Sprintf("%d of %d messages before the stop", len(held), slots)))
	}
	stopIntake()
	held = append(held, drain(t, out)...)
	acked := map[string]bool{}
	for i, m := range held {
		if m.Context().Err() != nil {
			t.Fatal("stopping intake ended the context of a message out")
		}
		if i%2 == 0 {
			s := settler(t, m)
			s.Settle(true)
			s.Settle(false) // once only: the first settle counts
			acked[string(m.Payload)] = true
		}
	}
	closeWithin(t, sub)
	for i, m := range held {
		if i%2 == 1 {
			if m.Context().Err() == nil {
				t.Error("Close did not end the context of an unsettled message")
			}
			settler(t, m).Settle(true) // too late: Close handed it back
		}
	}

	next := b.NewSubscriber(t, slots)
	out = subscribe(t, next, context.Background(), b.Topic)
	got := map[string]int{}
	for missing := missingOf(want, acked, got); missing > 0; missing = missingOf(want, acked, got) {
		m := receive(t, out, fmt.Sprintf("%d messages not acked before the stop", missing))
		got[string(m.Payload)]++
		m.Ack()
	}
	closeWithin(t, next)
	again := 0
	for p := range acked {
		again += got[p]
	}
	t.Logf("%d messages out at the stop, %d acked; %d of those delivered again (at least once)", len(held), len(acked), again)
}

// Close after a stop, Close twice, Close without a stop: each returns,
// the output closes, and Subscribe after Close fails.
func testCloseAfterStop(t *testing.T, b Binding) {
	sub := b.NewSubscriber(t, 2)
	ctx, stopIntake := context.WithCancel(context.Background())
	out := subscribe(t, sub, ctx, b.Topic)
	stopIntake()
	if len(drain(t, out)) != 0 {
		t.Error("a message arrived on a binding nobody published to")
	}
	closeWithin(t, sub)
	closeWithin(t, sub)
	if _, err := sub.Subscribe(context.Background(), b.Topic); err == nil {
		t.Error("Subscribe after Close returned no error")
	}

	other := b.NewSubscriber(t, 2)
	out = subscribe(t, other, context.Background(), b.Topic)
	closeWithin(t, other)
	drain(t, out)
}

// Many goroutines settle the same messages at once: the first settle of
// each counts, nothing is lost, and the race detector sees no race.
func testConcurrentSettles(t *testing.T, b Binding) {
	const n, racers = 300, 4
	sub := b.NewSubscriber(t, 30)
	out := subscribe(t, sub, transport.SettledByConsumer(context.Background()), b.Topic)
	want := payloads(t, n)
	b.Publish(t, want...)
	seen, acked := map[string]int{}, map[string]bool{}
	var settles sync.WaitGroup
	for len(acked) < n {
		m := receive(t, out, fmt.Sprintf("%d of %d messages acked", len(acked), n))
		p := string(m.Payload)
		seen[p]++
		// Odd messages are nacked the first time, by every racer.
		ok := seen[p] > 1 || p[len(p)-1]%2 == 0
		if ok {
			acked[p] = true
		}
		s := settler(t, m)
		for range racers {
			settles.Add(1)
			go func() {
				defer settles.Done()
				s.Settle(ok)
			}()
		}
	}
	settles.Wait()
	closeWithin(t, sub)
	checkAll(t, want, seen)
}

// A consumer that holds its slots gets nothing more until it settles one.
func testSlowConsumer(t *testing.T, b Binding) {
	const slots, n = 4, 12
	sub := b.NewSubscriber(t, slots)
	out := subscribe(t, sub, transport.SettledByConsumer(context.Background()), b.Topic)
	want := payloads(t, n)
	b.Publish(t, want...)
	var held []*message.Message
	for len(held) < slots {
		held = append(held, receive(t, out, fmt.Sprintf("%d of %d messages", len(held), slots)))
	}
	// Absence cannot be awaited: a subscriber that ignored its slots would
	// hand the next message out at once, well within this window.
	select {
	case m := <-out:
		t.Fatalf("message %s handed out while all %d slots were held", m.Payload, slots)
	case <-time.After(300 * time.Millisecond):
	}
	seen := map[string]int{}
	for _, m := range held {
		seen[string(m.Payload)]++
	}
	settler(t, held[0]).Settle(true)
	held = held[1:]
	for len(seen) < n {
		m := receive(t, out, fmt.Sprintf("%d of %d messages", len(seen), n))
		seen[string(m.Payload)]++
		held = append(held, m)
		settler(t, held[0]).Settle(true)
		held = held[1:]
	}
	for _, m := range held {
		settler(t, m).Settle(true)
	}
	closeWithin(t, sub)
	checkAll(t, want, seen)
}

// A message's context carries its Settler, does not derive from the
// Subscribe context, and ends when the message is settled (through the
// Settler or through Ack) or at Close.
func testMessageContext(t *testing.T, b Binding) {
	for _, bySettler := range []bool{true, false} {
		sub := b.NewSubscriber(t, 3)
		ctx := context.Background()
		if bySettler {
			ctx = transport.SettledByConsumer(ctx)
		}
		ctx, stopIntake := context.WithCancel(ctx)
		out := subscribe(t, sub, ctx, b.Topic)
		want := payloads(t, 2)
		b.Publish(t, want...)
		first := receive(t, out, "the first message")
		second := receive(t, out, "the second message")
		stopIntake()
		drain(t, out)
		if first.Context().Err() != nil || second.Context().Err() != nil {
			t.Fatal("a message's context ended with the Subscribe context")
		}
		if bySettler {
			settler(t, first).Settle(true)
		} else {
			settler(t, first) // carried whoever settles
			first.Ack()
		}
		select {
		case <-first.Context().Done():
		case <-time.After(wait):
			t.Fatalf("settled message's context did not end (by Settler: %v)", bySettler)
		}
		if second.Context().Err() != nil {
			t.Fatal("settling one message ended another's context")
		}
		closeWithin(t, sub)
		if second.Context().Err() == nil {
			t.Fatalf("Close did not end an unsettled message's context (by Settler: %v)", bySettler)
		}
		// What is left goes to the next subscriber; drained here so that
		// the second round starts from an empty binding.
		next := b.NewSubscriber(t, 3)
		out = subscribe(t, next, context.Background(), b.Topic)
		for got := false; !got; {
			m := receive(t, out, "the message Close handed back")
			got = string(m.Payload) == string(second.Payload)
			m.Ack()
		}
		closeWithin(t, next)
	}
}

func subscribe(t *testing.T, sub message.Subscriber, ctx context.Context, topic string) <-chan *message.Message {
	t.Helper()
	out, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe %s: %v", topic, err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return out
}

// payloads returns n payloads unique to the test.
func payloads(t *testing.T, n int) [][]byte {
	h := sha1.Sum([]byte(t.Name() + time.Now().String()))
	prefix := hex.EncodeToString(h[:4])
	ps := make([][]byte, n)
	for i := range ps {
		ps[i] = fmt.Appendf(nil, "%s-%05d", prefix, i)
	}
	return ps
}

// receive returns the next message of out, failing the test with what
// was awaited when none comes or out closes.
func receive(t *testing.T, out <-chan *message.Message, awaited string) *message.Message {
	t.Helper()
	select {
	case m, ok := <-out:
		if !ok {
			t.Fatalf("output closed awaiting %s", awaited)
		}
		return m
	case <-time.After(wait):
		t.Fatalf("no message within %s awaiting %s", wait, awaited)
	}
	return nil
}

// drain returns what out still hands out until it closes, which it must
// once intake stopped.
func drain(t *testing.T, out <-chan *message.Message) []*message.Message {
	t.Helper()
	var got []*message.Message
	deadline := time.After(wait)
	for {
		select {
		case m, ok := <-out:
			if !ok {
				return got
			}
			got = append(got, m)
		case <-deadline:
			t.Fatalf("output not closed %s after intake stopped", wait)
		}
	}
}

// settler returns the Settler of m, which every subscriber must give.
func settler(t *testing.T, m *message.Message) transport.Settler {
	t.Helper()
	s := transport.SettlerFrom(m.Context())
	if s == nil {
		t.Fatal("message context carries no transport.Settler")
	}
	return s
}

// closeWithin closes sub and fails the test when Close errs or does not
// return.
func closeWithin(t *testing.T, sub message.Subscriber) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- sub.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(wait):
		t.Fatalf("Close did not return within %s", wait)
	}
}

func missingOf(want [][]byte, acked map[string]bool, got map[string]int) int {
	missing := 0
	for _, p := range want {
		if !acked[string(p)] && got[string(p)] == 0 {
			missing++
		}
	}
	return missing
}

// checkAll fails the test for every payload of want not seen.
func checkAll(t *testing.T, want [][]byte, seen map[string]int) {
	t.Helper()
	dup := 0
	for _, p := range want {
		switch c := seen[string(p)]; {
		case c == 0:
			t.Errorf("message %s lost", p)
		case c > 1:
			dup += c - 1
		}
	}
	if dup > 0 {
		t.Logf("%d deliveries again (at least once)", dup)
	}
}
