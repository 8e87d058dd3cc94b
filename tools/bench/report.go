package bench

import (
	"fmt"
	"html"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Report writes the results as docs: a markdown page with the table, the
// machine and the command, and SVG charts of throughput and p99 latency.
type Report struct {
	Dir     string // where the files go, e.g. docs/bench
	Command string // what produced it
	Options Options
	Rows    []Row
	// Notes are extra lines for the page, e.g. the end-to-end figures.
	Notes []string
}

// Write writes README.md, throughput.svg and latency.svg into r.Dir.
func (r Report) Write() error {
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(r.Dir, "throughput.svg"), func(w io.Writer) error {
		return barChart(w, "Throughput (msg/s, higher is better)", r.Rows, func(res Result) float64 { return res.Rate() }, "%.0f")
	}); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(r.Dir, "latency.svg"), func(w io.Writer) error {
		return barChart(w, "p99 latency (ms, lower is better)", r.Rows, func(res Result) float64 {
			return float64(res.Percentile(99)) / float64(time.Millisecond)
		}, "%.1f")
	}); err != nil {
		return err
	}
	return writeFile(filepath.Join(r.Dir, "README.md"), r.markdown)
}

func (r Report) markdown(w io.Writer) error {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "# Benchmark: hexmill vs the raw clients\n\n")
	fmt.Fprintf(w, "Produced by `%s` on %s.\n\n", r.Command, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "Machine: %s, %d CPUs, %s/%s, %s. Brokers on loopback.\n\n", machineName(host), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Fprintf(w, "Each case moves %d messages per side, %d publishing goroutines, %d-byte payloads. Every side runs %d rounds, interleaved (raw client, hexmill, the other references, again), all in one process; a case whose rounds are short or whose broker's pace varies much runs more (memory/pipeline 9 after one unreported warm-up round of every side, rabbitmq/publish-confirmed 7, the aliyun cases 5); the table shows the median round by throughput, with every round's throughput beside it. CPU / msg is the median over the rounds of the CPU time of the side's own code per message (this benchmark process, which also runs the publishers and consumers that feed and drain the side, plus for the end-to-end cases the service process), brokers excluded. The last two columns are hexmill's median throughput divided by that row's, and hexmill's CPU / msg divided by that row's (below 1 is cheaper). The end-to-end backlog case queues all messages in mosquitto first and measures the pipeline draining them, without the generator and the sink on the same cores (docs/reliability.md). The state cases run the status pipeline on PostgreSQL (the test service's device-status handler; raw: amqp091-go and pgx by hand): reports from a RabbitMQ queue, each device's row updated if newer, DeviceStatusChanged published with a confirm on a change, directly or (dedup-outbox) through the processed-message record, the outbox and its relay; the reports are fed while the clock runs, which stops when every event the rows count arrived (docs/state.md, Cost).\n\n",
		r.Options.Messages, r.Options.Publishers, r.Options.Size, max(r.Options.Rounds, 1))
	fmt.Fprintf(w, "![throughput](throughput.svg)\n\n![p99 latency](latency.svg)\n\n")
	fmt.Fprint(w, tableHeader)
	for _, row := range r.Rows {
		writeRow(w, row)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
	return nil
}

func machineName(host string) string {
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
			}
		}
	}
	return host
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// barChart draws one group of bars per case, one bar per side.
func barChart(w io.Writer, title string, rows []Row, value func(Result) float64, format string) error {
	type bar struct {
		side string
		v    float64
	}
	var cases []string
	groups := map[string][]bar{}
	maxV := 0.0
	for _, r := range rows {
		if r.Err != nil {
			continue
		}
		if _, ok := groups[r.Case]; !ok {
			cases = append(cases, r.Case)
		}
		v := value(r.Result)
		groups[r.Case] = append(groups[r.Case], bar{r.Side, v})
		maxV = max(maxV, v)
	}
	const (
		left, top, barH, gap, width = 230, 40, 16, 14, 760
	)
	height := top + 20
	for _, c := range cases {
		height += len(groups[c])*barH + gap
	}
	colors := map[string]string{"raw": "#8d99ae", "hexmill": "#2a9d8f"}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/><text x="10" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	y := top
	for _, c := range cases {
		fmt.Fprintf(w, `<text x="10" y="%d">%s</text>`+"\n", y+barH-3, html.EscapeString(c))
		for _, b := range groups[c] {
			length := 0.0
			if maxV > 0 {
				length = b.v / maxV * float64(width-left-120)
			}
			color, ok := colors[b.side]
			if !ok {
				color = "#e9c46a"
			}
			fmt.Fprintf(w, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`, left, y, length, barH-2, color)
			fmt.Fprintf(w, `<text x="%.1f" y="%d">%s `+format+`</text>`+"\n", float64(left)+length+4, y+barH-4, html.EscapeString(b.side), b.v)
			y += barH
		}
		y += gap
	}
	fmt.Fprintln(w, `</svg>`)
	return nil
}
