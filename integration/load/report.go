package load

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// lostSample is how many lost sequence numbers a report lists.
const lostSample = 10

// Report is what a run did: what the generator sent, what reached the sink.
// Counts are of messages (sequence numbers) unless said otherwise.
type Report struct {
	RunID     string
	Transport Transport
	// Sent messages were confirmed by the broker the generator published to.
	Sent int
	// Unconfirmed messages were published but not confirmed when the
	// generator stopped; they are neither lost nor received.
	Unconfirmed int
	// Republished counts publications the generator repeated after a
	// connection failure or a PUBACK saying no subscriber took it.
	Republished int
	// NoSubscribers counts PUBACKs saying no subscriber took the message
	// (MQTT reason code 0x10); see SendResult.NoSubscribers.
	NoSubscribers int
	// Received is the number of sent messages whose alert arrived.
	Received int
	// Lost is the number of sent messages whose alert never arrived;
	// LostSample lists the first of them.
	Lost       int
	LostSample []int
	// Duplicated counts deliveries beyond the first of each message.
	Duplicated int
	// Unexpected counts deliveries of the run's alerts for messages that
	// were not confirmed sent (unconfirmed, or out of range).
	Unexpected int
	// Ignored counts other runs' or other metrics' alerts in the queue;
	// Malformed, deliveries that are no AlertRaised.
	Ignored, Malformed int
	// Latency from the telemetry's at (the generator's clock) to the
	// checker's receipt (its clock) of each message's first delivery.
	LatencyP50, LatencyP99, LatencyMax time.Duration
	// LongestGap is the longest time with no delivery while a message that
	// arrived later had been sent: the recovery time of an outage.
	// LongestGapAt is when it began, from the start of sending.
	LongestGap, LongestGapAt time.Duration
	// SendRate is the generator's confirmed messages per second.
	SendRate float64
	// Duration is from the start of sending to the last first delivery;
	// Throughput is Received / Duration.
	Duration   time.Duration
	Throughput float64
	// CheckerReconnects counts the checker's reconnections to the sink.
	CheckerReconnects int
}

// OK reports whether no sent message was lost.
func (r Report) OK() bool { return r.Lost == 0 }

// String is the one-line summary.
func (r Report) String() string {
	verdict := "OK"
	if !r.OK() {
		verdict = "LOST"
	}
	name := r.RunID
	if r.Transport != "" {
		name += " " + string(r.Transport)
	}
	s := fmt.Sprintf("%s run %s: sent %d received %d lost %d duplicated %d unexpected %d; latency p50 %s p99 %s max %s; longest gap %s; %.0f msg/s",
		verdict, name, r.Sent, r.Received, r.Lost, r.Duplicated, r.Unexpected,
		round(r.LatencyP50), round(r.LatencyP99), round(r.LatencyMax), round(r.LongestGap), r.Throughput)
	if r.Lost > 0 {
		s += fmt.Sprintf("; first lost %s", intList(r.LostSample))
	}
	return s
}

// Markdown is the report as a markdown table, one row per measure.
func (r Report) Markdown() string {
	var b strings.Builder
	row := func(k string, v any) { fmt.Fprintf(&b, "| %s | %v |\n", k, v) }
	b.WriteString("| measure | value |\n|---|---|\n")
	row("run", r.RunID)
	row("transport", r.Transport)
	row("sent (confirmed)", r.Sent)
	row("unconfirmed", r.Unconfirmed)
	row("republished", r.Republished)
	row("dropped for no subscriber (0x10)", r.NoSubscribers)
	row("received (distinct)", r.Received)
	lost := fmt.Sprint(r.Lost)
	if r.Lost > 0 {
		lost += " (first: " + intList(r.LostSample) + ")"
	}
	row("lost", lost)
	row("duplicated", r.Duplicated)
	row("unexpected", r.Unexpected)
	row("ignored / malformed", fmt.Sprintf("%d / %d", r.Ignored, r.Malformed))
	row("latency p50", round(r.LatencyP50))
	row("latency p99", round(r.LatencyP99))
	row("latency max", round(r.LatencyMax))
	row("longest gap", fmt.Sprintf("%s (at +%s)", round(r.LongestGap), round(r.LongestGapAt)))
	row("send rate", fmt.Sprintf("%.0f msg/s", r.SendRate))
	row("end-to-end", fmt.Sprintf("%.0f msg/s over %s", r.Throughput, round(r.Duration)))
	row("checker reconnects", r.CheckerReconnects)
	return b.String()
}

func intList(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ",")
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// report computes the report of sent from what was received. The caller
// holds c.mu.
func (c *Checker) report(sent SendResult) Report {
	r := Report{
		RunID:             sent.RunID,
		Transport:         sent.Transport,
		Sent:              sent.Confirmed,
		Unconfirmed:       sent.Unconfirmed,
		Republished:       sent.Republished,
		NoSubscribers:     sent.NoSubscribers,
		Ignored:           c.ignored,
		Malformed:         c.malformed,
		SendRate:          sent.Rate(),
		CheckerReconnects: c.reconnects,
	}
	if r.RunID == "" {
		r.RunID = c.cfg.RunID
	}
	for n := range sent.Count {
		if !sent.IsConfirmed(n) {
			continue
		}
		if n < len(c.seen) && c.seen[n] > 0 {
			r.Received++
			r.Duplicated += int(c.seen[n]) - 1
		} else {
			r.Lost++
			if len(r.LostSample) < lostSample {
				r.LostSample = append(r.LostSample, n)
			}
		}
	}
	for n, k := range c.seen {
		if k > 0 && !sent.IsConfirmed(n) {
			r.Unexpected += int(k)
		}
	}

	// Latencies of first deliveries; gaps between deliveries.
	ds := c.deliveries
	counts := func(d delivery) bool { return !d.replays && sent.IsConfirmed(d.seq) }
	lat := make([]time.Duration, 0, len(ds))
	var lastFirst int64
	for _, d := range ds {
		if counts(d) {
			lat = append(lat, time.Duration(d.recv-d.at))
			lastFirst = d.recv
		}
	}
	slices.Sort(lat)
	r.LatencyP50, r.LatencyP99 = percentile(lat, 50), percentile(lat, 99)
	if len(lat) > 0 {
		r.LatencyMax = lat[len(lat)-1]
	}
	start := sent.Started.UnixNano()
	if sent.Started.IsZero() && len(ds) > 0 {
		start = ds[0].at
		for _, d := range ds {
			start = min(start, d.at)
		}
	}
	if lastFirst > 0 {
		r.Duration = time.Duration(lastFirst - start)
		if r.Duration > 0 {
			r.Throughput = float64(r.Received) / r.Duration.Seconds()
		}
	}
	r.LongestGap, r.LongestGapAt = longestGap(ds, counts)
	if r.LongestGap > 0 {
		r.LongestGapAt -= time.Duration(start)
	}
	return r
}

// longestGap is the longest stretch between two deliveries (or before the
// first) during which a message later received had already been sent:
// for the gap before delivery i+1, from the later of delivery i and the
// earliest send time among the first deliveries from i+1 on. It returns
// the gap and its start in unix nanos.
func longestGap(ds []delivery, counts func(delivery) bool) (gap, at time.Duration) {
	sufMin := make([]int64, len(ds)+1)
	sufMin[len(ds)] = math.MaxInt64
	for i := len(ds) - 1; i >= 0; i-- {
		sufMin[i] = sufMin[i+1]
		if counts(ds[i]) {
			sufMin[i] = min(sufMin[i], ds[i].at)
		}
	}
	prev := int64(math.MinInt64)
	for i, d := range ds {
		from := max(prev, sufMin[i])
		if g := d.recv - from; sufMin[i] != math.MaxInt64 && g > int64(gap) {
			gap, at = time.Duration(g), time.Duration(from)
		}
		prev = d.recv
	}
	return gap, at
}

// percentile is the nearest-rank p-th percentile of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(float64(len(sorted))*p/100)) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
