package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
)

// The RabbitMQ cases. Every side publishes persistent messages to a fresh
// durable classic queue through the default exchange and counts a message
// only once the broker confirmed it.
//
//   - rabbitmq/publish-confirmed: opts.Publishers goroutines, each sending
//     batches of rabbitWindow messages and waiting until the batch is
//     confirmed. Raw: one channel per goroutine, PublishWithDeferredConfirm.
//     hexmill: Publish(topic, window messages...) on one publisher (its
//     channel pool). Baselines: raw with a sliding window of rabbitWindow
//     confirms, and watermill-amqp's stock publisher with ConfirmDelivery
//     called like hexmill.
//   - rabbitmq/publish-confirmed-single: the same, one message per call
//     (a handler publishing one event): raw waits for each confirm on its
//     own channel; hexmill's callers share its pool.
//   - rabbitmq/consume-ack: drain a pre-filled queue, acking each message,
//     prefetch rabbitPrefetch.
const (
	rabbitWindow   = 64
	rabbitPrefetch = 100
)

// rabbitAvailable reports whether RabbitMQ answers.
func rabbitAvailable(context.Context) error {
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return fmt.Errorf("set HEXMILL_TEST_RABBITMQ_URL or start RabbitMQ: %w", err)
	}
	return conn.Close()
}

func init() {
	available := rabbitAvailable
	register(Case{
		Name: "rabbitmq/publish-confirmed", Available: available,
		// RabbitMQ's pace (its disk, its schedulers) varies much from
		// round to round: more rounds.
		MinRounds: 7,
		Raw:       func(ctx context.Context, o Options) (Result, error) { return rawPublish(ctx, o, rabbitWindow, false) },
		Hexmill:   func(ctx context.Context, o Options) (Result, error) { return hexmillPublish(ctx, o, rabbitWindow) },
		Baselines: map[string]Run{
			"raw sliding window":             func(ctx context.Context, o Options) (Result, error) { return rawPublish(ctx, o, rabbitWindow, true) },
			"watermill-amqp ConfirmDelivery": func(ctx context.Context, o Options) (Result, error) { return watermillPublish(ctx, o, rabbitWindow) },
		},
	})
	register(Case{
		Name: "rabbitmq/publish-confirmed-single", Available: available,
		Raw:     func(ctx context.Context, o Options) (Result, error) { return rawPublish(ctx, o, 1, false) },
		Hexmill: func(ctx context.Context, o Options) (Result, error) { return hexmillPublish(ctx, o, 1) },
		Baselines: map[string]Run{
			// One confirm awaited per message is slow: fewer messages
			// give its rate.
			"watermill-amqp ConfirmDelivery": func(ctx context.Context, o Options) (Result, error) {
				o.Messages = max(o.Messages/5, o.Publishers)
				return watermillPublish(ctx, o, 1)
			},
		},
	})
	register(Case{
		Name: "rabbitmq/consume-ack", Available: available, Raw: rawConsume,
		// hexmill consumes as its runtime does: each message settled
		// through the transport.Settler in its context; "hexmill, watermill
		// Ack" is the subscriber used as a plain watermill one, its Ack
		// bridged onto the Settler by a goroutine per message.
		Hexmill: func(ctx context.Context, o Options) (Result, error) { return hexmillConsume(ctx, o, true) },
		Baselines: map[string]Run{
			"hexmill, watermill Ack": func(ctx context.Context, o Options) (Result, error) { return hexmillConsume(ctx, o, false) },
		},
	})
}

func rabbitURL() string {
	return Env("HEXMILL_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
}

// benchQueue declares a fresh durable classic queue and returns its name
// and a function that deletes it.
func benchQueue(label string) (string, func(), error) {
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return "", nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return "", nil, err
	}
	name := "hexmill.bench." + label + "." + watermill.NewShortUUID()
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		_ = conn.Close()
		return "", nil, err
	}
	return name, func() {
		_, _ = ch.QueueDelete(name, false, false, false)
		_ = conn.Close()
	}, nil
}

// split returns how many messages publisher i of n sends out of total.
func split(total, n, i int) int {
	share := total / n
	if i < total%n {
		share++
	}
	return share
}

// runPublishers runs o.Publishers goroutines, each sending its share in
// calls of up to window messages, and times them.
func runPublishers(ctx context.Context, o Options, window int, send func(worker, count int) error) (Result, error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		lat  []time.Duration
	)
	clk := startClock()
	for i := range o.Publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for left := split(o.Messages, o.Publishers, i); left > 0 && ctx.Err() == nil; {
				n := min(window, left)
				t0 := time.Now()
				if err := send(i, n); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				local = append(local, time.Since(t0))
				left -= n
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res := clk.result(o.Messages, lat)
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return res, errors.Join(errs...)
}

// rawPublish publishes with amqp091-go, a channel in confirm mode per
// goroutine and deferred confirms. In batches (sliding false) a goroutine
// publishes window messages and waits for their confirms, as a Publish
// call of window messages does: the same guarantee when the call returns.
// With sliding, it waits for the oldest confirm only when window are in
// flight: more throughput, but the caller learns of each confirm out of
// band, which a Publish call cannot offer.
func rawPublish(ctx context.Context, o Options, window int, sliding bool) (Result, error) {
	queue, drop, err := benchQueue("raw")
	if err != nil {
		return Result{}, err
	}
	defer drop()
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	chans := make([]*amqp.Channel, o.Publishers)
	for i := range chans {
		if chans[i], err = conn.Channel(); err != nil {
			return Result{}, err
		}
		if err := chans[i].Confirm(false); err != nil {
			return Result{}, err
		}
	}
	pub := amqp.Publishing{Body: make([]byte, o.Size), DeliveryMode: amqp.Persistent}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	clk := startClock()
	for i := range o.Publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := func() error {
				var inflight []*amqp.DeferredConfirmation
				for range split(o.Messages, o.Publishers, i) {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					dc, err := chans[i].PublishWithDeferredConfirm("", queue, true, false, pub)
					if err != nil {
						return err
					}
					inflight = append(inflight, dc)
					if len(inflight) < window {
						continue
					}
					drain := inflight // batch: wait for all of them
					if sliding {
						drain = inflight[:1] // sliding: only the oldest
					}
					for _, dc := range drain {
						if !dc.Wait() {
							return errors.New("nacked")
						}
					}
					inflight = inflight[len(drain):]
				}
				for _, dc := range inflight {
					if !dc.Wait() {
						return errors.New("nacked")
					}
				}
				return nil
			}()
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return clk.result(o.Messages, nil), errors.Join(errs...)
}

func hexmillPublish(ctx context.Context, o Options, window int) (Result, error) {
	queue, drop, err := benchQueue("hexmill")
	if err != nil {
		return Result{}, err
	}
	defer drop()
	c, err := rabbitmq.New(rabbitmq.Config{URL: rabbitmq.URL(rabbitURL()), ConnectionName: "hexmill-bench"}, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	if err := c.Open(context.Background()); err != nil {
		return Result{}, err
	}
	defer c.Close()
	pub, err := c.Publisher(nil)
	if err != nil {
		return Result{}, err
	}
	defer pub.Close()
	return runPublishers(ctx, o, window, publishBatch(pub, queue, o.Size))
}

func watermillPublish(ctx context.Context, o Options, window int) (Result, error) {
	queue, drop, err := benchQueue("watermill")
	if err != nil {
		return Result{}, err
	}
	defer drop()
	cfg := wamqp.NewDurableQueueConfig(rabbitURL())
	cfg.Publish.ConfirmDelivery = true
	pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	defer pub.Close()
	return runPublishers(ctx, o, window, publishBatch(pub, queue, o.Size))
}

// publishBatch publishes each batch of n messages in one Publish call, as
// a watermill user would.
func publishBatch(pub message.Publisher, queue string, size int) func(_ int, n int) error {
	body := make([]byte, size)
	return func(_ int, n int) error {
		msgs := make([]*message.Message, n)
		for j := range msgs {
			msgs[j] = message.NewMessage(watermill.NewUUID(), body)
		}
		return pub.Publish(queue, msgs...)
	}
}

// confirmChannel dials RabbitMQ and opens a channel in confirm mode; the
// caller closes the connection.
func confirmChannel() (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, ch, nil
}

// fill publishes n messages to queue with pipelined confirms.
func fill(queue string, n, size int) error {
	conn, ch, err := confirmChannel()
	if err != nil {
		return err
	}
	defer conn.Close()
	pub := amqp.Publishing{Body: make([]byte, size), DeliveryMode: amqp.Persistent}
	var dcs []*amqp.DeferredConfirmation
	for i := range n {
		pub.MessageId = fmt.Sprint(i)
		dc, err := ch.PublishWithDeferredConfirm("", queue, false, false, pub)
		if err != nil {
			return err
		}
		dcs = append(dcs, dc)
	}
	for _, dc := range dcs {
		if !dc.Wait() {
			return errors.New("fill: nacked")
		}
	}
	return nil
}

func rawConsume(ctx context.Context, o Options) (Result, error) {
	queue, drop, err := benchQueue("raw-consume")
	if err != nil {
		return Result{}, err
	}
	defer drop()
	if err := fill(queue, o.Messages, o.Size); err != nil {
		return Result{}, err
	}
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return Result{}, err
	}
	if err := ch.Qos(rabbitPrefetch, 0, false); err != nil {
		return Result{}, err
	}
	clk := startClock()
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return Result{}, err
	}
	for i := 0; i < o.Messages; i++ {
		select {
		case d := <-deliveries:
			if err := d.Ack(false); err != nil {
				return Result{}, err
			}
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
	return clk.result(o.Messages, nil), nil
}

func hexmillConsume(ctx context.Context, o Options, byConsumer bool) (Result, error) {
	queue, drop, err := benchQueue("hexmill-consume")
	if err != nil {
		return Result{}, err
	}
	defer drop()
	if err := fill(queue, o.Messages, o.Size); err != nil {
		return Result{}, err
	}
	c, err := rabbitmq.New(rabbitmq.Config{URL: rabbitmq.URL(rabbitURL()), ConnectionName: "hexmill-bench"}, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	if err := c.Open(context.Background()); err != nil {
		return Result{}, err
	}
	defer c.Close()
	sub, err := c.Subscriber(rabbitmq.SubscriberConfig{Handler: "bench", Concurrency: rabbitPrefetch})
	if err != nil {
		return Result{}, err
	}
	defer sub.Close()
	clk := startClock()
	out, err := sub.Subscribe(subscribeContext(ctx, byConsumer), queue)
	if err != nil {
		return Result{}, err
	}
	for i := 0; i < o.Messages; i++ {
		select {
		case m := <-out:
			ack(m, byConsumer)
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
	return clk.result(o.Messages, nil), nil
}
