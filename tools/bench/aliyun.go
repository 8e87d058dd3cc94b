package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/ThreeDotsLabs/watermill"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/aliyun"
)

// The Aliyun cases: receive + handle + accept over RabbitMQ's AMQP 1.0
// plugin (Aliyun's push stands in for a prefilled queue), hexmill's aliyun
// consumer against raw go-amqp, both with explicitly managed credit at the
// same credit. Only the consume is timed; the queue is filled first.
func init() {
	for _, credit := range []int{20, 200} {
		register(Case{
			Name:      fmt.Sprintf("aliyun-amqp1-receive/credit-%d", credit),
			Available: amqp1Available,
			// RabbitMQ's AMQP 1.0 plugin keeps no steady pace from round
			// to round (a side's rounds span a fifth of its rate): more
			// rounds.
			MinRounds: 5,
			Raw:       func(ctx context.Context, o Options) (Result, error) { return aliyunRaw(ctx, o, credit) },
			// hexmill consumes as its runtime does, each message settled
			// through the transport.Settler in its context; "hexmill,
			// watermill Ack" is the subscriber used as a plain watermill
			// one, its Ack bridged onto the Settler.
			Hexmill: func(ctx context.Context, o Options) (Result, error) { return aliyunHexmill(ctx, o, credit, true) },
			Baselines: map[string]Run{
				"hexmill, watermill Ack": func(ctx context.Context, o Options) (Result, error) { return aliyunHexmill(ctx, o, credit, false) },
			},
		})
	}
}

// stallTimeout is both sides' stall breaker.
const stallTimeout = 2 * time.Second

// rawStallLimit ends a raw round whose link stays silent although the queue
// is not empty: now and then raw go-amqp's link does not recover with the
// same top-ups and drains that hexmill's adapter uses (seen twice in about
// ten runs before hexmill's credit guard, never on the hexmill side); the
// round is then reported failed instead of hanging the benchmark.
const rawStallLimit = 30 * time.Second

func amqp1Addr() string { return Env("HEXMILL_TEST_AMQP1_ADDR", "127.0.0.1:5672") }

func amqp1Available(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := dialAMQP1(ctx)
	if err != nil {
		return fmt.Errorf("AMQP 1.0 at %s (HEXMILL_TEST_AMQP1_ADDR; enable rabbitmq_amqp1_0): %w", amqp1Addr(), err)
	}
	return conn.Close()
}

func dialAMQP1(ctx context.Context) (*amqp.Conn, error) {
	return amqp.Dial(ctx, "amqp://"+amqp1Addr(), &amqp.ConnOptions{SASLType: amqp.SASLTypePlain("guest", "guest")})
}

// fillQueue declares a fresh queue and sends n messages as Aliyun pushes
// them (topic, messageId, generateTime application properties).
func fillQueue(ctx context.Context, o Options, side string) (queue string, err error) {
	// Labelled, with the goroutines of its connection, so that a profile
	// of the run can leave the untimed fill out (-tagignore phase=fill).
	pprof.Do(ctx, pprof.Labels("phase", "fill"), func(ctx context.Context) {
		queue, err = fill1(ctx, o, side)
	})
	return queue, err
}

func fill1(ctx context.Context, o Options, side string) (string, error) {
	queue := fmt.Sprintf("hexmill-bench-aliyun-%s-%s", side, watermill.NewShortUUID())
	conn, err := dialAMQP1(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	payload := make([]byte, o.Size)
	workers := max(o.Publishers, 1)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			session, err := conn.NewSession(ctx, nil)
			if err != nil {
				errs <- err
				return
			}
			sender, err := session.NewSender(ctx, "/queue/"+queue, nil)
			if err != nil {
				errs <- err
				return
			}
			for i := w; i < o.Messages; i += workers {
				m := amqp.NewMessage(payload)
				m.ApplicationProperties = map[string]any{
					"topic":        "/pk/dev" + strconv.Itoa(i%100) + "/thing/event/property/post",
					"messageId":    strconv.Itoa(i),
					"generateTime": time.Now().UnixMilli(),
				}
				if err := sender.Send(ctx, m, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return queue, <-errs
}

func deleteQueue(queue string) {
	conn, err := amqp091.Dial("amqp://guest:guest@" + amqp1Addr() + "/")
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		_, _ = ch.QueueDelete(queue, false, false, false)
	}
}

// aliyunRaw: one go-amqp receiver, Credit -1, IssueCredit in batches of a
// quarter of the credit as messages are accepted, buffered messages taken
// without a timer, and hexmill's stall breaker.
func aliyunRaw(ctx context.Context, o Options, credit int) (Result, error) {
	queue, err := fillQueue(ctx, o, "raw")
	defer deleteQueue(queue)
	if err != nil {
		return Result{}, err
	}
	conn, err := dialAMQP1(ctx)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	session, err := conn.NewSession(ctx, nil)
	if err != nil {
		return Result{}, err
	}
	clk := startClock()
	r, err := session.NewReceiver(ctx, "/queue/"+queue, &amqp.ReceiverOptions{Credit: -1, SettlementMode: amqp.ReceiverSettleModeFirst.Ptr()})
	if err != nil {
		return Result{}, err
	}
	// The same credit policy as hexmill's: keep outstanding credit (issued
	// minus received, negative when the broker overshoots) topped up to
	// credit, in batches of a quarter, or at once when none is left. A
	// naive "IssueCredit(n) after n accepts" stalls against RabbitMQ 3.10
	// when the broker overshoots by exactly the batch.
	batch, outstanding, silences := max(1, credit/4), 0, 0
	refill := func() error {
		want := credit - outstanding
		if want <= 0 || (want < batch && outstanding > 0) {
			return nil
		}
		outstanding += want
		silences = 0 // the top-ups, if any, were used up
		return r.IssueCredit(uint32(want))
	}
	if err := refill(); err != nil {
		return Result{}, err
	}
	// And the same stall breaker: silent for stallTimeout with credit
	// believed outstanding (go-amqp's grant landed below what RabbitMQ had
	// already sent), top the credit up, twice at most until refill issues
	// credit again; a third silence drains the link, after which broker and
	// go-amqp agree on zero.
	accept := func(m *amqp.Message) error {
		handle(m.GetData())
		return r.AcceptMessage(ctx, m)
	}
	progress := time.Now()
	for n := 0; n < o.Messages; {
		if time.Since(progress) > rawStallLimit {
			return Result{}, fmt.Errorf("raw go-amqp link stalled after %d messages: no message for %s despite top-ups and drains", n, rawStallLimit)
		}
		m, err := r.Prefetched(), error(nil)
		if m == nil {
			rctx, cancel := context.WithTimeout(ctx, stallTimeout)
			m, err = r.Receive(rctx, nil)
			cancel()
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			if silences++; silences <= 2 {
				outstanding += credit
				if err := r.IssueCredit(uint32(credit)); err != nil {
					return Result{}, err
				}
				continue
			}
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := r.DrainCredit(dctx, nil)
			cancel()
			if err != nil {
				return Result{}, fmt.Errorf("raw drain after %d: %w", n, err)
			}
			for m := r.Prefetched(); m != nil && n < o.Messages; m = r.Prefetched() {
				if err := accept(m); err != nil {
					return Result{}, err
				}
				n++
			}
			outstanding, silences = 0, 0
			if err := refill(); err != nil {
				return Result{}, err
			}
			continue
		}
		if err != nil {
			return Result{}, fmt.Errorf("raw receive after %d: %w", n, err)
		}
		progress = time.Now()
		outstanding--
		if err := accept(m); err != nil {
			return Result{}, err
		}
		n++
		if err := refill(); err != nil {
			return Result{}, err
		}
	}
	return clk.result(o.Messages, nil), nil
}

var sink int

// handle is the benchmark's handler: it touches the payload.
func handle(b []byte) {
	if len(b) > 0 {
		sink += int(b[0])
	}
}

// aliyunHexmill: hexmill's aliyun consumer (one connection, the same
// credit), a subscriber that handles and acks each message, through its
// Settler (byConsumer) or with Ack.
func aliyunHexmill(ctx context.Context, o Options, credit int, byConsumer bool) (Result, error) {
	queue, err := fillQueue(ctx, o, "hexmill")
	defer deleteQueue(queue)
	if err != nil {
		return Result{}, err
	}
	host, portS, err := net.SplitHostPort(amqp1Addr())
	if err != nil {
		return Result{}, err
	}
	port, _ := strconv.Atoi(portS)
	off := false
	cfg := aliyun.Config{
		Host: host, Port: port, TLS: &off,
		AccessKeyID: "bench", AccessKeySecret: "unused", ConsumerGroupID: "bench", ClientID: "hexmill-bench",
		Credit: credit, SourceAddress: "/queue/" + queue, StallTimeout: stallTimeout,
	}
	c, err := aliyun.New(cfg, watermill.NopLogger{}, aliyun.WithPlainAuth("guest", "guest"))
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	sub, err := c.Subscriber(aliyun.SubscriberConfig{Handler: "bench", Concurrency: credit})
	if err != nil {
		return Result{}, err
	}
	defer sub.Close()
	clk := startClock()
	out, err := sub.Subscribe(subscribeContext(ctx, byConsumer), "/+/+/thing/event/property/post")
	if err != nil {
		return Result{}, err
	}
	timeout := time.NewTimer(5 * time.Minute)
	defer timeout.Stop()
	for n := 0; n < o.Messages; n++ {
		select {
		case m := <-out:
			handle(m.Payload)
			ack(m, byConsumer)
		case <-timeout.C:
			return Result{}, fmt.Errorf("hexmill: %d of %d messages after 5m", n, o.Messages)
		}
	}
	// The last accepts go out asynchronously: count until the broker has
	// them all.
	for c.Stats().Accepted < int64(o.Messages) {
		select {
		case <-ctx.Done():
			return Result{}, ctx.Err()
		case <-timeout.C:
			return Result{}, errors.New("hexmill: accepts not all sent")
		case <-time.After(100 * time.Microsecond):
		}
	}
	return clk.result(o.Messages, nil), nil
}
