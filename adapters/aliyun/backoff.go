package aliyun

import (
	"math/rand/v2"
	"sync"
	"time"
)

// backoff is an exponential backoff with jitter: each wait is drawn from
// [d/2, d], d doubling from min to max.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
	rand     func() float64 // in [0, 1)
}

func newBackoff(min, max time.Duration, rnd func() float64) *backoff {
	if rnd == nil {
		rnd = rand.Float64
	}
	return &backoff{min: min, max: max, rand: rnd}
}

// next returns the wait before the next attempt.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	half := b.cur / 2
	return half + time.Duration(b.rand()*float64(b.cur-half))
}

// reset starts again from min after a connection came up.
func (b *backoff) reset() { b.cur = 0 }

// attemptLimiter allows at most max attempts in any window (a sliding
// window): Aliyun refuses more than 100 connection attempts per consumer
// group per minute, counted over all connections.
type attemptLimiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	times  []time.Time // of the attempts within the window, oldest first
}

func newAttemptLimiter(max int, window time.Duration) *attemptLimiter {
	return &attemptLimiter{max: max, window: window}
}

// reserve records an attempt at now and returns 0 when one is allowed;
// otherwise it records nothing and returns how long to wait.
func (l *attemptLimiter) reserve(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	cut := 0
	for cut < len(l.times) && !l.times[cut].After(now.Add(-l.window)) {
		cut++
	}
	l.times = l.times[cut:]
	if len(l.times) >= l.max {
		return l.times[0].Add(l.window).Sub(now)
	}
	l.times = append(l.times, now)
	return 0
}
