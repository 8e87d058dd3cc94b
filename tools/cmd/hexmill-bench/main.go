// Command hexmill-bench measures hexmill against the raw client libraries in
// one run and prints a markdown table with throughput, latency and the ratio.
//
//	cd tools && go run ./cmd/hexmill-bench -run 'rabbitmq' -n 100000
//
// Brokers come from the same variables as the integration tests
// (HEXMILL_TEST_RABBITMQ_URL, HEXMILL_TEST_MQTT_URL, HEXMILL_TEST_AMQP1_ADDR),
// with the local defaults when unset.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/hexmill/hexmill/tools/bench"
)

func main() {
	var (
		opts   bench.Options
		filter string
	)
	flag.IntVar(&opts.Messages, "n", 50000, "messages per side")
	flag.IntVar(&opts.Publishers, "publishers", 16, "concurrent publishers")
	flag.IntVar(&opts.Size, "size", 64, "payload bytes")
	flag.IntVar(&opts.Rounds, "rounds", 1, "rounds per side, interleaved; the median round by throughput is reported, and the median CPU per message")
	flag.StringVar(&filter, "run", "", "only cases whose name matches this regular expression")
	report := flag.String("report", "", "also write a markdown report with SVG charts into this directory (e.g. docs/bench)")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile (every side run) to this file")
	memProfile := flag.String("memprofile", "", "write this process's allocation profile (every side run) to this file")
	mutexProfile := flag.String("mutexprofile", "", "write this process's mutex contention profile (every side run) to this file")
	sides := flag.String("side", "", "only sides whose name matches this regular expression (e.g. '^hexmill$' to profile one side)")
	flag.Parse()

	re, err := regexp.Compile(filter)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hexmill-bench: -run: %v\n", err)
		os.Exit(2)
	}
	if *sides != "" {
		if opts.Sides, err = regexp.Compile(*sides); err != nil {
			fmt.Fprintf(os.Stderr, "hexmill-bench: -side: %v\n", err)
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Printf("hexmill-bench: %d messages per side, %d publishers, %d-byte payloads, %d rounds\n\n", opts.Messages, opts.Publishers, opts.Size, max(opts.Rounds, 1))
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "hexmill-bench: -cpuprofile: %v\n", err)
			os.Exit(2)
		}
	}
	if *mutexProfile != "" {
		runtime.SetMutexProfileFraction(10)
	}
	rows := bench.Execute(ctx, os.Stdout, bench.Cases(re), opts)
	pprof.StopCPUProfile()
	if *mutexProfile != "" {
		if err := writeProfile("mutex", *mutexProfile); err != nil {
			fmt.Fprintf(os.Stderr, "hexmill-bench: -mutexprofile: %v\n", err)
			os.Exit(2)
		}
	}
	if *memProfile != "" {
		if err := writeProfile("allocs", *memProfile); err != nil {
			fmt.Fprintf(os.Stderr, "hexmill-bench: -memprofile: %v\n", err)
			os.Exit(2)
		}
	}
	if *report != "" {
		r := bench.Report{Dir: *report, Command: "cd tools && go run ./cmd/hexmill-bench " + strings.Join(os.Args[1:], " "), Options: opts, Rows: rows, Notes: bench.Notes()}
		if err := r.Write(); err != nil {
			fmt.Fprintf(os.Stderr, "hexmill-bench: report: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("\nreport written to %s\n", *report)
	}
	for _, r := range rows {
		if r.Err != nil {
			os.Exit(1)
		}
	}
}

// writeProfile writes the named runtime profile to path ("allocs": its
// alloc_space and alloc_objects cover the whole run).
func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
