// Package bench measures hexmill against the raw client libraries, side by
// side in one run: each Case runs the same work through hexmill and through
// the raw client with the same guarantees, and the report prints the ratio.
//
// A transport adds its cases from a file of its own (rabbitmq.go, mqtt.go,
// ...) with register in an init function.
package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
)

// Options are the knobs every case honours.
type Options struct {
	Messages   int // messages per side
	Publishers int // concurrent publishing goroutines
	Size       int // payload bytes
	// Rounds is how often each side runs, interleaved (raw, hexmill,
	// baselines, raw, ...); the median round is reported. 0 means 1.
	Rounds int
	// Sides, when set, runs only the sides whose name matches ("raw",
	// "hexmill", a baseline's name): to profile one side alone.
	Sides *regexp.Regexp
}

// Run is one side of a case: it moves opts.Messages messages and reports
// what it measured. Latencies may be empty when the case measures only
// throughput.
type Run func(ctx context.Context, opts Options) (Result, error)

// Result is what one side measured.
type Result struct {
	Messages int
	Elapsed  time.Duration
	// CPU is the CPU time the side's client code used (this process, and
	// for out-of-process sides the process under test), 0 if unknown.
	CPU       time.Duration
	Latencies []time.Duration
}

// Rate is messages per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Messages) / r.Elapsed.Seconds()
}

// Percentile returns the p-th percentile latency (0 < p <= 100), or 0 when
// nothing was recorded.
func (r Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	l := slices.Clone(r.Latencies)
	slices.Sort(l)
	i := int(float64(len(l))*p/100+0.5) - 1
	return l[min(max(i, 0), len(l)-1)]
}

// Case is one measurement: the same work through hexmill and the raw client.
type Case struct {
	Name string
	// Available reports an error when what the case needs (a broker, a
	// binary) is missing; the case is then reported as skipped.
	Available func(ctx context.Context) error
	Hexmill   Run
	Raw       Run
	// RawName names the Raw side in the report when it is not the raw
	// client ("raw" when empty): a case comparing hexmill with itself
	// in another setting.
	RawName string
	// Baselines are further references (for example watermill's stock
	// publisher), reported as ratios of hexmill to them.
	Baselines map[string]Run
	// MinRounds is the least number of rounds the case runs, above
	// Options.Rounds: for a case whose rounds are short or whose
	// broker's pace varies much from round to round, so that the median
	// is steady.
	MinRounds int
	// Warmup runs every side once before the reported rounds: for a case
	// whose first round pays the process's warm-up (heap growth, caches).
	Warmup bool
}

var (
	casesMu sync.Mutex
	cases   []Case
)

func register(c Case) {
	casesMu.Lock()
	defer casesMu.Unlock()
	cases = append(cases, c)
}

// Cases returns the registered cases whose name matches filter, by name.
func Cases(filter *regexp.Regexp) []Case {
	casesMu.Lock()
	defer casesMu.Unlock()
	var out []Case
	for _, c := range cases {
		if filter == nil || filter.MatchString(c.Name) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Row is one reported line.
type Row struct {
	Case, Side string
	Result     Result        // the median round by rate
	Rates      []float64     // every successful round's rate, in order
	CPU        time.Duration // the median of the rounds' CPU time per message; 0 if unknown
	Failed     []error       // the rounds that failed
	Ratio      float64       // hexmill rate / this side's rate; 0 on the hexmill row
	CPURatio   float64       // hexmill CPU per message / this side's; 0 on the hexmill row
	Err        error         // set when every round failed
}

const tableHeader = "| case | side | messages | msg/s | rounds (msg/s) | CPU / msg | p50 | p99 | hexmill / side | CPU hexmill / side |\n|---|---|---:|---:|---|---:|---:|---:|---:|---:|\n"

// Execute runs the cases and writes a markdown table to w as it goes. Each
// round runs the raw client first, then hexmill, then the baselines, so
// that both main sides see the same broker state; rounds interleave so that
// a disturbance of the machine does not fall on one side only.
func Execute(ctx context.Context, w io.Writer, cs []Case, opts Options) []Row {
	fmt.Fprint(w, tableHeader)
	var rows []Row
	for _, c := range cs {
		if c.Available != nil {
			if err := c.Available(ctx); err != nil {
				fmt.Fprintf(w, "| %s | skipped: %v | | | | | | | | |\n", c.Name, err)
				continue
			}
		}
		rawName := cmp.Or(c.RawName, "raw")
		caseRows := []Row{{Case: c.Name, Side: rawName}, {Case: c.Name, Side: "hexmill"}}
		runs := []Run{c.Raw, c.Hexmill}
		names := make([]string, 0, len(c.Baselines))
		for name := range c.Baselines {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			caseRows = append(caseRows, Row{Case: c.Name, Side: name})
			runs = append(runs, c.Baselines[name])
		}
		results := make([][]Result, len(runs))
		rounds := max(opts.Rounds, c.MinRounds, 1)
		if c.Warmup {
			rounds++
		}
		for round := range rounds {
			for i, run := range runs {
				if ctx.Err() != nil {
					break
				}
				if opts.Sides != nil && !opts.Sides.MatchString(caseRows[i].Side) {
					continue
				}
				res, err := run(ctx, opts)
				if c.Warmup && round == 0 {
					continue
				}
				if err != nil {
					caseRows[i].Failed = append(caseRows[i].Failed, err)
					continue
				}
				results[i] = append(results[i], res)
				caseRows[i].Rates = append(caseRows[i].Rates, res.Rate())
			}
		}
		for i := range caseRows {
			if len(results[i]) > 0 {
				caseRows[i].Result = median(results[i])
				caseRows[i].CPU = medianCPU(results[i])
			} else if len(caseRows[i].Failed) > 0 {
				caseRows[i].Err = caseRows[i].Failed[0]
			} else {
				caseRows[i].Err = ctx.Err()
			}
		}
		hex := caseRows[1]
		for i := range caseRows {
			r := &caseRows[i]
			if opts.Sides != nil && !opts.Sides.MatchString(r.Side) {
				continue
			}
			if r.Side != "hexmill" && r.Err == nil && hex.Err == nil && r.Result.Rate() > 0 {
				r.Ratio = hex.Result.Rate() / r.Result.Rate()
			}
			if r.Side != "hexmill" && r.CPU > 0 && hex.CPU > 0 {
				r.CPURatio = float64(hex.CPU) / float64(r.CPU)
			}
			writeRow(w, *r)
		}
		for _, r := range caseRows {
			if opts.Sides == nil || opts.Sides.MatchString(r.Side) {
				rows = append(rows, r)
			}
		}
	}
	return rows
}

var (
	notesMu sync.Mutex
	notes   []string
)

// Notes are the figures that the table has no column for (the end-to-end
// case's lost, duplicated and peak RSS, the brokers' CPU), for
// Report.Notes.
func Notes() []string {
	notesMu.Lock()
	defer notesMu.Unlock()
	return append([]string(nil), notes...)
}

// addNote prints a note to stderr as it comes and keeps it for the report.
func addNote(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	fmt.Fprintln(os.Stderr, line)
	notesMu.Lock()
	notes = append(notes, line)
	notesMu.Unlock()
}

// median returns the result with the median rate (the lower one of the
// middle two for an even count).
func median(rs []Result) Result {
	if len(rs) == 0 {
		return Result{}
	}
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b Result) int { return cmp.Compare(a.Rate(), b.Rate()) })
	return s[(len(s)-1)/2]
}

// medianCPU returns the median of the rounds' CPU time per message (the
// lower of the middle two for an even count), 0 when a round has none. It
// is taken over the rounds on its own, not from the median round by rate:
// on a shared machine a round's rate and its CPU are disturbed apart.
func medianCPU(rs []Result) time.Duration {
	per := make([]time.Duration, 0, len(rs))
	for _, r := range rs {
		if r.CPU <= 0 || r.Messages <= 0 {
			return 0
		}
		per = append(per, r.CPU/time.Duration(r.Messages))
	}
	if len(per) == 0 {
		return 0
	}
	slices.Sort(per)
	return per[(len(per)-1)/2]
}

func writeRow(w io.Writer, r Row) {
	if r.Err != nil {
		fmt.Fprintf(w, "| %s | %s | error: %v | | | | | | | |\n", r.Case, r.Side, r.Err)
		return
	}
	ratio := ""
	if r.Ratio > 0 {
		ratio = fmt.Sprintf("%.2fx", r.Ratio)
	}
	rounds := make([]string, len(r.Rates))
	for i, v := range r.Rates {
		rounds[i] = fmt.Sprintf("%.0f", v)
	}
	for _, err := range r.Failed {
		rounds = append(rounds, "failed: "+err.Error())
	}
	cpu := "-"
	if r.CPU > 0 {
		cpu = fmt.Sprintf("%.1f µs", float64(r.CPU.Nanoseconds())/1e3)
	}
	cpuRatio := ""
	if r.CPURatio > 0 {
		cpuRatio = fmt.Sprintf("%.2fx", r.CPURatio)
	}
	fmt.Fprintf(w, "| %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %s |\n", r.Case, r.Side, r.Result.Messages,
		r.Result.Rate(), strings.Join(rounds, " / "), cpu, fmtLatency(r.Result.Percentile(50)), fmtLatency(r.Result.Percentile(99)), ratio, cpuRatio)
}

func fmtLatency(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(time.Microsecond).String()
}

// Env returns the value of an environment variable or def.
func Env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// subscribeContext is the Subscribe context of a consumer that settles
// through the transport.Settler in each message's context (byConsumer, as
// the runtime does) or through Ack, as a watermill consumer.
func subscribeContext(ctx context.Context, byConsumer bool) context.Context {
	if byConsumer {
		return transport.SettledByConsumer(ctx)
	}
	return ctx
}

// ack acks m through its transport.Settler (byConsumer), else with Ack.
func ack(m *message.Message, byConsumer bool) {
	if byConsumer {
		transport.SettlerFrom(m.Context()).Settle(true)
		return
	}
	m.Ack()
}
