// Command hexmill-bench measures hexmill against the raw client libraries in
// one run and prints a markdown table with throughput, latency and the ratio.
//
//	go run ./cmd/hexmill-bench -run 'rabbitmq' -n 100000
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
	"syscall"

	"github.com/hexmill/hexmill/internal/bench"
)

func main() {
	var (
		opts   bench.Options
		filter string
	)
	flag.IntVar(&opts.Messages, "n", 50000, "messages per side")
	flag.IntVar(&opts.Publishers, "publishers", 16, "concurrent publishers")
	flag.IntVar(&opts.Size, "size", 64, "payload bytes")
	flag.StringVar(&filter, "run", "", "only cases whose name matches this regular expression")
	flag.Parse()

	re, err := regexp.Compile(filter)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hexmill-bench: -run: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Printf("hexmill-bench: %d messages per side, %d publishers, %d-byte payloads\n\n", opts.Messages, opts.Publishers, opts.Size)
	rows := bench.Execute(ctx, os.Stdout, bench.Cases(re), opts)
	for _, r := range rows {
		if r.Err != nil {
			os.Exit(1)
		}
	}
}
