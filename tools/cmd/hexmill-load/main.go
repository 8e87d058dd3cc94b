// Command hexmill-load sends numbered telemetry to a hexmill deployment and
// checks that an alert came out for every message. See docs/load.md.
//
//	hexmill-load run   -transport mqtt -url mqtt://broker:1883 -count 100000 -rate 5000 \
//	                   -sink amqp://user:pass@rabbit:5672/ -sink-exchange events -sink-key AlertRaised
//	hexmill-load send  -transport mqtt -url mqtt://broker:1883 -count 100000
//	hexmill-load check -run-id 1a2b3c4d -count 100000 -sink amqp://... -sink-queue q
//
// The service must run with domain.thresholds.seq = -1. Exit status: 0 when
// nothing was lost, 1 when messages were lost or a step failed, 2 on a
// usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hexmill/hexmill/integration/load"
)

const usage = `usage: hexmill-load <command> [flags]

commands:
  send   publish numbered telemetry and print the run ID
  check  read the sink queue and report the alerts of a run
  run    check while sending, then report (the usual one)

"hexmill-load <command> -h" lists the command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("hexmill-load "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		send  load.SendConfig
		check load.CheckConfig
		count int
	)
	switch args[0] {
	case "send":
		sendFlags(fs, &send)
	case "check":
		checkFlags(fs, &check)
		fs.StringVar(&check.RunID, "run-id", "", "run ID printed by send (required)")
		fs.IntVar(&count, "count", 0, "messages the run sent, numbered 0..count-1 (required)")
	case "run":
		sendFlags(fs, &send)
		checkFlags(fs, &check)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "hexmill-load: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hexmill-load: unexpected arguments %q\n", fs.Args())
		return 2
	}

	switch args[0] {
	case "send":
		if send.RunID == "" {
			send.RunID = load.NewRunID()
		}
		fmt.Fprintf(stdout, "run-id %s: sending %d messages over %s to %s\n", send.RunID, send.Count, send.Transport, redact(send.URL))
		r, err := load.Send(ctx, send)
		fmt.Fprintf(stdout, "run-id %s: %d confirmed, %d unconfirmed, %d republished (%d dropped by the broker for no subscriber) in %s (%.0f msg/s)\n",
			r.RunID, r.Confirmed, r.Unconfirmed, r.Republished, r.NoSubscribers, r.Elapsed.Round(time.Millisecond), r.Rate())
		if err != nil {
			fmt.Fprintf(stderr, "hexmill-load: %v\n", err)
			return 1
		}
		return 0
	case "check":
		if check.RunID == "" || count <= 0 {
			fmt.Fprintln(stderr, "hexmill-load check: -run-id and -count are required")
			return 2
		}
		if check.Queue == "" {
			check.Queue = "hexmill-load-" + check.RunID
		}
		r, err := load.Check(ctx, check, load.Expect(check.RunID, count))
		return report(stdout, stderr, r, err)
	default: // run
		if send.RunID == "" {
			send.RunID = load.NewRunID()
		}
		if check.Queue == "" {
			// A queue of the run's own, gone afterwards.
			check.Queue = "hexmill-load-" + send.RunID
			check.DeleteQueue = true
		}
		fmt.Fprintf(stdout, "run-id %s: sending %d messages over %s to %s, checking queue %s\n", send.RunID, send.Count, send.Transport, redact(send.URL), check.Queue)
		r, err := load.Run(ctx, load.RunConfig{Send: send, Check: check})
		return report(stdout, stderr, r, err)
	}
}

// redact hides the password of a URL.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func report(stdout, stderr io.Writer, r load.Report, err error) int {
	fmt.Fprintln(stdout, r)
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, r.Markdown())
	if err != nil {
		fmt.Fprintf(stderr, "hexmill-load: %v\n", err)
		return 1
	}
	if !r.OK() {
		return 1
	}
	return 0
}

func sendFlags(fs *flag.FlagSet, c *load.SendConfig) {
	fs.Func("transport", "mqtt, amqp1 (Aliyun push format) or rabbitmq (default mqtt)", func(s string) error {
		c.Transport = load.Transport(s)
		return nil
	})
	c.Transport = load.MQTT
	fs.StringVar(&c.URL, "url", "", "broker URL: mqtt://host:1883, amqp://user:pass@host:5672/ (required)")
	fs.StringVar(&c.RunID, "run-id", "", "run ID (default random)")
	fs.IntVar(&c.Count, "count", 10000, "messages, numbered 0..count-1")
	fs.Float64Var(&c.Rate, "rate", 0, "messages per second over all publishers; 0: as fast as confirmed")
	fs.IntVar(&c.Publishers, "publishers", 4, "concurrent publishers, one connection each")
	fs.IntVar(&c.Window, "window", 64, "messages in flight per publisher awaiting confirmation")
	fs.IntVar(&c.Devices, "devices", 4, "devices the messages are spread over")
	fs.DurationVar(&c.GiveUp, "give-up", time.Minute, "fail when a publisher gets no confirmation for this long")
	fs.StringVar(&c.Topic, "topic", "devices/{device_id}/telemetry", "mqtt: topic pattern")
	fs.StringVar(&c.ClientIDPrefix, "client-id", "hexmill-load", "mqtt: client ID prefix (IDs are prefix-runID-i)")
	fs.StringVar(&c.Username, "user", "", "mqtt: user name (else from the URL)")
	fs.StringVar(&c.Password, "password", os.Getenv("HEXMILL_LOAD_PASSWORD"), "mqtt: password (default $HEXMILL_LOAD_PASSWORD, else from the URL)")
	fs.StringVar(&c.Address, "address", "", "amqp1: target address, e.g. /amq/queue/telemetry")
	fs.StringVar(&c.Exchange, "exchange", "", "rabbitmq: exchange (\"\": the default exchange)")
	fs.StringVar(&c.RoutingKey, "routing-key", "", "rabbitmq: routing key; {device_id} is replaced")
}

func checkFlags(fs *flag.FlagSet, c *load.CheckConfig) {
	fs.StringVar(&c.URL, "sink", "amqp://guest:guest@127.0.0.1:5672/", "sink RabbitMQ URL")
	fs.StringVar(&c.Queue, "sink-queue", "", "queue to read the alerts from, declared durable if absent (default hexmill-load-{run-id}; run deletes it afterwards)")
	fs.StringVar(&c.Exchange, "sink-exchange", "", "exchange the service publishes AlertRaised to; the queue is bound to it")
	fs.StringVar(&c.ExchangeType, "sink-exchange-type", "topic", "type of the exchange, when it has to be declared")
	fs.StringVar(&c.BindingKey, "sink-key", "#", "binding key (the AlertRaised binding's topic)")
	fs.DurationVar(&c.QuietTimeout, "quiet", 10*time.Second, "stop when no alert arrived for this long")
	fs.IntVar(&c.Prefetch, "prefetch", 256, "unacked deliveries")
}
