package bench

// The end-to-end case without its load on the same cores: the pipeline
// drains a backlog. In the live case (e2e.go) the generator and the sink
// consumer, stand-ins for devices and for the services downstream, share
// the two cores with the brokers and the pipeline, and take a good part
// of them. Here each side's pipeline subscribes (its persistent
// MQTT session and $share subscription), stops, the generator queues all
// the messages in mosquitto, and the pipeline starts again and drains
// them: MQTT QoS 1 in, alerts published persistent and confirmed to
// RabbitMQ, the MQTT ack after the confirm, as in the live case. The rate
// is from the first alert in the sink queue to the last; the queue is
// read only afterwards, to count what was lost or duplicated. CPU is
// measured over the drain: mosquitto, RabbitMQ and the pipeline.

import (
	"context"
	"fmt"
	"os"
	"time"
)

func init() {
	register(Case{
		Name:      "e2e/mqtt-service-rabbitmq-backlog",
		Available: e2eAvailable,
		Raw:       e2eBacklogSide("raw", rawPipeline),
		Hexmill:   e2eBacklogSide("hexmill", hexmillPipeline),
		// The same with OpenTelemetry tracing on (docs/tracing.md): the
		// cost of the spans and their export per message.
		Baselines: map[string]Run{
			"hexmill, tracing 1.0": e2eBacklogSide("hexmill, tracing 1.0", tracedPipeline("1")),
			"hexmill, tracing 0.1": e2eBacklogSide("hexmill, tracing 0.1", tracedPipeline("0.1")),
		},
	})
}

// backlogPoll is how often the sink queue's depth is read during a drain.
const backlogPoll = 10 * time.Millisecond

func e2eBacklogSide(side string, start pipeline) Run {
	return func(ctx context.Context, opts Options) (Result, error) {
		n, mosquittoPID, sink, done, err := e2eStart(opts)
		if err != nil {
			return Result{}, err
		}
		defer done()

		// The session and its subscription, then the backlog.
		stop, _, err := start(ctx, n)
		if err != nil {
			return Result{}, err
		}
		stop()
		sent, err := e2eGenerate(ctx, n, opts)
		if err != nil {
			return Result{}, err
		}

		stop, pid, err := start(ctx, n)
		if err != nil {
			return Result{}, err
		}
		stopped := false
		defer func() {
			if !stopped {
				stop()
			}
		}()
		cpu := brokerMeter()
		cpu.add("mosquitto", mosquittoPID, false)
		cpu.add("service", pid, true)
		if pid == 0 {
			cpu.add("bench (pipeline)", os.Getpid(), true)
		}
		first, last, err := drained(ctx, sink, opts.Messages)
		if err != nil {
			return Result{}, err
		}
		res := Result{Messages: opts.Messages, Elapsed: last.Sub(first)}
		perMessage, client := cpu.read(opts.Messages)
		res.CPU = client
		extra := stop()
		stopped = true
		if perMessage != "" {
			extra += "; CPU per message: " + perMessage
		}

		if err := sink.consume(); err != nil {
			return res, err
		}
		_, lost, dup, err := sink.wait(ctx, sent.Started)
		addNote("e2e/mqtt-service-rabbitmq-backlog %s: %d messages queued in mosquitto, drained at %.0f msg/s, lost %d, duplicated %d%s",
			side, opts.Messages, res.Rate(), lost, dup, extra)
		if err != nil {
			return res, err
		}
		if lost > 0 {
			return res, fmt.Errorf("%d of %d messages lost", lost, opts.Messages)
		}
		return res, nil
	}
}

// drained waits until the sink queue holds count messages and returns when
// the first and the last arrived (to backlogPoll).
func drained(ctx context.Context, sink *e2eSink, count int) (first, last time.Time, err error) {
	tick := time.NewTicker(backlogPoll)
	defer tick.Stop()
	deadline := time.NewTimer(5 * time.Minute)
	defer deadline.Stop()
	got := 0
	for {
		select {
		case <-tick.C:
		case <-deadline.C:
			return first, last, fmt.Errorf("the sink queue holds %d of %d messages after 5m", got, count)
		case <-ctx.Done():
			return first, last, ctx.Err()
		}
		n, err := sink.depth()
		if err != nil {
			return first, last, fmt.Errorf("sink depth: %w", err)
		}
		now := time.Now()
		if n > 0 && first.IsZero() {
			first = now
		}
		if n > got {
			got, last = n, now
		}
		if got >= count {
			return first, last, nil
		}
	}
}
