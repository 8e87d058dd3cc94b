package memory_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/transport"
)

func newBroker(t *testing.T) *memory.Transport {
	t.Helper()
	b, err := memory.New(memory.Config{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newSubscriber(t *testing.T, b *memory.Transport, group string, concurrency int) message.Subscriber {
	t.Helper()
	s, err := b.Subscriber(memory.SubscriberConfig{Group: group, Concurrency: concurrency})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPubSub(t *testing.T) {
	// One broker for the suite, as one process has one: the suite's topics
	// are unique per test.
	b := newBroker(t)
	tests.TestPubSub(t,
		tests.Features{
			ConsumerGroups:        true,
			RequireSingleInstance: true,
			Persistent:            true, // within the broker, which outlives publishers and subscribers
		},
		func(t *testing.T) (message.Publisher, message.Subscriber) {
			return b, newSubscriber(t, b, "", 16)
		},
		func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
			return b, newSubscriber(t, b, group, 16)
		},
	)
}

// Stopping intake leaves delivered messages settleable; Close requeues the
// unsettled ones for the next subscriber of the group. The same with
// messages settled through Ack and through their transport.Settler.
func TestStopIntakeThenClose(t *testing.T) {
	for _, byConsumer := range []bool{false, true} {
		t.Run(fmt.Sprintf("ByConsumer=%v", byConsumer), func(t *testing.T) {
			testStopIntakeThenClose(t, byConsumer)
		})
	}
}

func testStopIntakeThenClose(t *testing.T, byConsumer bool) {
	b := newBroker(t)
	for _, p := range []string{"a", "b", "c"} {
		if err := b.Publish("t", message.NewMessage(p, []byte(p))); err != nil {
			t.Fatal(err)
		}
	}
	sub := newSubscriber(t, b, "g", 2)
	subCtx := context.Background()
	if byConsumer {
		subCtx = transport.SettledByConsumer(subCtx)
	}
	ctx, stopIntake := context.WithCancel(subCtx)
	out, err := sub.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	first, second := <-out, <-out
	stopIntake()
	if _, open := <-out; open {
		t.Fatal("output channel delivered a message after intake stopped")
	}
	if first.Context().Err() != nil {
		t.Fatal("stopping intake cancelled the context of a message in flight")
	}
	if byConsumer {
		transport.SettlerFrom(first.Context()).Settle(true)
	} else {
		first.Ack()
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if second.Context().Err() == nil {
		t.Error("the unsettled message's context did not end at Close")
	}
	if byConsumer {
		transport.SettlerFrom(second.Context()).Settle(true) // too late: requeued
	} else {
		second.Ack()
	}
	if first.UUID != "a" || second.UUID != "b" {
		t.Fatalf("got %s, %s; want a, b", first.UUID, second.UUID)
	}

	next := newSubscriber(t, b, "g", 1)
	defer next.Close()
	out, err = next.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		select {
		case m := <-out:
			got = append(got, m.UUID)
			m.Ack()
		case <-time.After(5 * time.Second):
			t.Fatalf("got %v; want the unsettled b back, then c", got)
		}
	}
	if got[0] != "b" || got[1] != "c" {
		t.Fatalf("got %v; want [b c]", got)
	}
}

// With a transport.SettledByConsumer Subscribe context only the Settler settles:
// Ack is not awaited, so an acked but unsettled message goes back at Close.
func TestByConsumerIgnoresAck(t *testing.T) {
	b := newBroker(t)
	if err := b.Publish("t", message.NewMessage("a", []byte("a"))); err != nil {
		t.Fatal(err)
	}
	sub := newSubscriber(t, b, "g", 1)
	out, err := sub.Subscribe(transport.SettledByConsumer(context.Background()), "t")
	if err != nil {
		t.Fatal(err)
	}
	m := <-out
	m.Ack()
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if n := b.Depth("t", "g"); n != 1 {
		t.Fatalf("queue holds %d messages after Close; want the acked but unsettled one back", n)
	}
}

// max_queue_bytes bounds a queue in bytes as queue_limit does in
// messages, before and after a subscriber exists; an empty queue takes a
// message of any size, and taking messages out makes room again.
func TestMaxQueueBytes(t *testing.T) {
	b, err := memory.New(memory.Config{MaxQueueBytes: 100}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	msg := func(n int) *message.Message { return message.NewMessage("id", make([]byte, n)) }
	publish := func(topic string, n int) error { return b.Publish(topic, msg(n)) }

	if err := publish("waiting", 60); err != nil {
		t.Fatal(err)
	}
	if err := publish("waiting", 60); !errors.Is(err, memory.ErrQueueFull) {
		t.Fatalf("120 bytes waiting in a queue of 100: %v, want ErrQueueFull", err)
	}
	if err := publish("big", 500); err != nil {
		t.Fatalf("one message larger than the bound, to an empty queue: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newSubscriber(t, b, "g", 1)
	out, err := s.Subscribe(ctx, "queued")
	if err != nil {
		t.Fatal(err)
	}
	if err := publish("queued", 10); err != nil { // handed to the subscriber: out of the queue
		t.Fatal(err)
	}
	first := <-out
	for range 2 {
		if err := publish("queued", 45); err != nil {
			t.Fatal(err)
		}
	}
	if err := publish("queued", 45); !errors.Is(err, memory.ErrQueueFull) {
		t.Fatalf("135 bytes in a queue of 100: %v, want ErrQueueFull", err)
	}
	first.Ack()
	<-out // one of 45 out: room for another
	if err := publish("queued", 45); err != nil {
		t.Fatalf("after a message left the queue: %v", err)
	}
	if _, err := memory.New(memory.Config{MaxQueueBytes: -1}, nil); err == nil {
		t.Fatal("a negative max_queue_bytes is accepted")
	}
}
