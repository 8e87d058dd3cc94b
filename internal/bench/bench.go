// Package bench measures hexmill against the raw client libraries, side by
// side in one run: each Case runs the same work through hexmill and through
// the raw client with the same guarantees, and the report prints the ratio.
//
// A transport adds its cases from a file of its own (rabbitmq.go, mqtt.go,
// ...) with register in an init function.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"sync"
	"time"
)

// Options are the knobs every case honours.
type Options struct {
	Messages   int // messages per side
	Publishers int // concurrent publishing goroutines
	Size       int // payload bytes
}

// Run is one side of a case: it moves opts.Messages messages and reports
// what it measured. Latencies may be empty when the case measures only
// throughput.
type Run func(ctx context.Context, opts Options) (Result, error)

// Result is what one side measured.
type Result struct {
	Messages  int
	Elapsed   time.Duration
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
	// Baselines are further references (for example watermill's stock
	// publisher), reported as ratios of hexmill to them.
	Baselines map[string]Run
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
	Result     Result
	Ratio      float64 // hexmill rate / this side's rate; 0 on the hexmill row
	Err        error
}

// Execute runs the cases and writes a markdown table to w as it goes. The
// raw client runs first, then hexmill, then the baselines, so that both main
// sides see the same broker state.
func Execute(ctx context.Context, w io.Writer, cs []Case, opts Options) []Row {
	fmt.Fprintf(w, "| case | side | messages | msg/s | p50 | p99 | hexmill / side |\n")
	fmt.Fprintf(w, "|---|---|---:|---:|---:|---:|---:|\n")
	var rows []Row
	for _, c := range cs {
		if c.Available != nil {
			if err := c.Available(ctx); err != nil {
				fmt.Fprintf(w, "| %s | skipped: %v | | | | | |\n", c.Name, err)
				continue
			}
		}
		raw, rawErr := c.Raw(ctx, opts)
		hex, hexErr := c.Hexmill(ctx, opts)
		caseRows := []Row{{Case: c.Name, Side: "raw", Result: raw, Err: rawErr}, {Case: c.Name, Side: "hexmill", Result: hex, Err: hexErr}}
		names := make([]string, 0, len(c.Baselines))
		for name := range c.Baselines {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			r, err := c.Baselines[name](ctx, opts)
			caseRows = append(caseRows, Row{Case: c.Name, Side: name, Result: r, Err: err})
		}
		for i := range caseRows {
			r := &caseRows[i]
			if r.Side != "hexmill" && r.Err == nil && hexErr == nil && r.Result.Rate() > 0 {
				r.Ratio = hex.Rate() / r.Result.Rate()
			}
			writeRow(w, *r)
		}
		rows = append(rows, caseRows...)
	}
	return rows
}

func writeRow(w io.Writer, r Row) {
	if r.Err != nil {
		fmt.Fprintf(w, "| %s | %s | error: %v | | | | |\n", r.Case, r.Side, r.Err)
		return
	}
	ratio := ""
	if r.Ratio > 0 {
		ratio = fmt.Sprintf("%.2fx", r.Ratio)
	}
	fmt.Fprintf(w, "| %s | %s | %d | %.0f | %s | %s | %s |\n", r.Case, r.Side, r.Result.Messages,
		r.Result.Rate(), fmtLatency(r.Result.Percentile(50)), fmtLatency(r.Result.Percentile(99)), ratio)
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
