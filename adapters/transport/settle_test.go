package transport

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

// recorder records the settles it gets.
type recorder struct{ got []bool }

func (r *recorder) Settle(acked bool) { r.got = append(r.got, acked) }

// Await settles through the Settler what the consumer said with Ack and
// Nack; when the message's context ends first it settles an ack given by
// then and nothing else.
func TestAwait(t *testing.T) {
	tests := []struct {
		name  string
		act   func(msg *message.Message, cancel context.CancelFunc)
		settl []bool
	}{
		{"ack", func(m *message.Message, _ context.CancelFunc) { m.Ack() }, []bool{true}},
		{"nack", func(m *message.Message, _ context.CancelFunc) { m.Nack() }, []bool{false}},
		{"context ends, not acked", func(_ *message.Message, cancel context.CancelFunc) { cancel() }, nil},
		{"acked, then the context ends", func(m *message.Message, cancel context.CancelFunc) { m.Ack(); cancel() }, []bool{true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := message.NewMessage("1", nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tt.act(msg, cancel)
			var r recorder
			awaitAck(msg, &r, ctx.Done())
			if len(r.got) != len(tt.settl) || (len(r.got) == 1 && r.got[0] != tt.settl[0]) {
				t.Fatalf("settled %v, want %v", r.got, tt.settl)
			}
		})
	}
}

func TestContexts(t *testing.T) {
	ctx := context.Background()
	if IsSettledByConsumer(ctx) || SettlerFrom(ctx) != nil {
		t.Fatal("a bare context carries a promise or a Settler")
	}
	var r recorder
	ctx = WithSettler(SettledByConsumer(ctx), &r)
	if !IsSettledByConsumer(ctx) || SettlerFrom(ctx) != &r {
		t.Fatal("the promise or the Settler got lost")
	}
}

// A message's context ends when it is settled, and so do contexts derived
// from it (through AfterFunc, not a goroutine each).
func TestDeliveryContext(t *testing.T) {
	h := NewHandout(SettledByConsumer(context.Background()), 1, func(int, bool) {})
	defer h.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		msg := <-h.Output()
		ctx := msg.Context()
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		after := make(chan struct{})
		stop := context.AfterFunc(ctx, func() { close(after) })
		if ctx.Err() != nil || child.Err() != nil {
			t.Error("context ended before the settle")
		}
		SettlerFrom(ctx).Settle(true)
		<-ctx.Done()
		<-child.Done()
		<-after
		if stop() {
			t.Error("AfterFunc's stop reported it stopped a function that ran")
		}
		if ctx.Err() != context.Canceled || child.Err() != context.Canceled {
			t.Errorf("Err after settle: %v, child %v", ctx.Err(), child.Err())
		}
		if _, ok := ctx.Deadline(); ok {
			t.Error("a message context has a deadline")
		}
	}()
	if !h.Acquire() || !h.Send(message.NewMessage("1", nil), 1) {
		t.Fatal("not handed out")
	}
	<-done
}
