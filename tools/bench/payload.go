package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// stamp returns a payload of size bytes (at least 8) starting with the
// current time, for latency measurement.
func stamp(size int) []byte {
	b := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(b, uint64(time.Now().UnixNano()))
	return b
}

// since returns how long ago the payload was stamped.
func since(payload []byte) time.Duration {
	if len(payload) < 8 {
		return 0
	}
	return time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(payload))))
}

// publishAll runs opts.Publishers goroutines that call publish for message
// indexes 0..opts.Messages-1 between them; it returns their errors.
func publishAll(opts Options, publish func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, opts.Publishers)
	for p := range opts.Publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= opts.Messages {
					return
				}
				if err := publish(i); err != nil {
					errs[p] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// recorder collects one latency per received message from many goroutines
// and says when all have arrived.
type recorder struct {
	lat  []time.Duration
	n    atomic.Int64
	done chan struct{}
}

func newRecorder(messages int) *recorder {
	return &recorder{lat: make([]time.Duration, messages), done: make(chan struct{})}
}

// record notes a received payload; extra deliveries (redeliveries) are
// counted but not recorded.
func (r *recorder) record(payload []byte) {
	i := int(r.n.Add(1)) - 1
	if i < len(r.lat) {
		r.lat[i] = since(payload)
		if i == len(r.lat)-1 {
			close(r.done)
		}
	}
}

// wait returns the result once every message arrived, timed by clk.
func (r *recorder) wait(ctx context.Context, clk clock) (Result, error) {
	select {
	case <-r.done:
		return clk.result(len(r.lat), r.lat), nil
	case <-ctx.Done():
		return Result{}, fmt.Errorf("received %d of %d: %w", r.n.Load(), len(r.lat), ctx.Err())
	}
}
