package settle_test

import (
	"context"
	"testing"

	"github.com/hexmill/hexmill/internal/settle"
)

// recorder records the settles it gets.
type recorder struct{ got []bool }

func (r *recorder) Settle(acked bool) { r.got = append(r.got, acked) }

func TestContexts(t *testing.T) {
	ctx := context.Background()
	if settle.IsByConsumer(ctx) || settle.From(ctx) != nil {
		t.Fatal("a bare context carries a promise or a Settler")
	}
	var r recorder
	ctx = settle.With(settle.ByConsumer(ctx), &r)
	if !settle.IsByConsumer(ctx) || settle.From(ctx) != &r {
		t.Fatal("the promise or the Settler got lost")
	}
}
