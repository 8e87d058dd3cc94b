package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/mqtt"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/ports"
)

// Ordered by key (handlers.<name>.order_by, docs/ordering.md): the
// runtime with orderedWorkers workers, messages of orderedKeys keys and a
// handler that sleeps orderedLatency, ordered by key (the hexmill row),
// unordered on as many workers (the first row) and unordered on one
// worker (the one order a binding had without order_by). The ratios say
// what the order costs and what it saves over concurrency 1.
const (
	orderedWorkers = 32
	orderedKeys    = 2000
	orderedLatency = time.Millisecond
	// orderedMaxMessages caps the messages per side: at concurrency 1 a
	// message takes the handler's latency.
	orderedMaxMessages = 20_000
)

// orderMode is one row of the ordered cases.
type orderMode struct {
	concurrency int
	ordered     bool
}

var (
	orderedMode   = orderMode{concurrency: orderedWorkers, ordered: true}
	unorderedMode = orderMode{concurrency: orderedWorkers}
	serialMode    = orderMode{concurrency: 1}
)

func init() {
	unordered := fmt.Sprintf("unordered, concurrency %d", orderedWorkers)
	register(Case{
		Name:      "ordered-by-key/memory",
		Hexmill:   orderedMemory(orderedMode),
		Raw:       orderedMemory(unorderedMode),
		RawName:   unordered,
		Baselines: map[string]Run{"concurrency 1": orderedMemory(serialMode)},
	})
	register(Case{
		Name:      "ordered-by-key/mqtt",
		Available: mqttAvailable,
		Hexmill:   withBroker(orderedMQTT(orderedMode)),
		Raw:       withBroker(orderedMQTT(unorderedMode)),
		RawName:   unordered,
		Baselines: map[string]Run{"concurrency 1": withBroker(orderedMQTT(serialMode))},
	})
}

// binding is the bench handler's binding in mode m; key is the order_by
// template.
func (m orderMode) binding(b config.Binding, key string) config.Binding {
	b.Concurrency = m.concurrency
	if m.ordered {
		b.OrderBy = key
	}
	return b
}

// orderedRuntime starts the runtime with the bench handler bound by b on
// the transport opener: it sleeps orderedLatency and records.
func orderedRuntime(ctx context.Context, cfg config.Config, b config.Binding, opener runtime.Opener, rec func([]byte)) (*runtime.Runtime, error) {
	cfg.Handlers = map[string]config.Binding{"bench": b}
	cfg.Events = nil
	rt, err := runtime.New(runtime.Params{
		Config:     cfg,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Transports: []runtime.Opener{opener},
		Handlers: []ports.Handler{ports.HandlerFunc{HandlerName: "bench", Func: func(_ context.Context, msg ports.Message) error {
			time.Sleep(orderedLatency)
			rec(msg.Payload)
			return nil
		}}},
	})
	if err != nil {
		return nil, err
	}
	if err := rt.Start(ctx); err != nil {
		return nil, err
	}
	return rt, nil
}

func orderedMemory(m orderMode) Run {
	return func(ctx context.Context, opts Options) (Result, error) {
		opts.Messages = min(opts.Messages, orderedMaxMessages)
		broker, err := memory.New(memory.Config{QueueLimit: opts.Messages + 1}, watermill.NopLogger{})
		if err != nil {
			return Result{}, err
		}
		rec := newRecorder(opts.Messages)
		cfg := config.Default("bench")
		cfg.Poison.Transport = config.TransportMemory
		b := m.binding(config.Binding{Transport: config.TransportMemory, Topic: "bench.in", Group: "bench"}, "{device}")
		rt, err := orderedRuntime(ctx, cfg, b, app.MemoryOpener(broker), rec.record)
		if err != nil {
			return Result{}, err
		}
		defer rt.Stop(context.Background())
		clk := startClock()
		if err := publishAll(opts, func(i int) error {
			msg := message.NewMessage(watermill.NewUUID(), stamp(opts.Size))
			msg.Metadata.Set("device", "d"+strconv.Itoa(i%orderedKeys))
			return broker.Publish("bench.in", msg)
		}); err != nil {
			return Result{}, err
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		return rec.wait(ctx, clk)
	}
}

// orderedMQTT: the key is the device in the topic (topic_params), as in
// the sample's status binding.
func orderedMQTT(m orderMode) func(ctx context.Context, opts Options, server string) (Result, error) {
	return func(ctx context.Context, opts Options, server string) (Result, error) {
		opts.Messages = min(opts.Messages, orderedMaxMessages)
		mcfg := mqtt.Config{
			Servers: []string{server}, ClientID: "bench-ordered-" + watermill.NewShortUUID() + "-{conn}",
			SessionExpiry: time.Minute, ReceiveMaximum: mqttReceiveMaximum, QoS: 1,
		}
		base := benchTopic()
		e := newE2E(opts.Messages)
		cfg := config.Default("bench")
		cfg.Poison = config.EventBinding{Transport: config.TransportMQTT, Topic: base + "/poison"}
		b := m.binding(config.Binding{Transport: config.TransportMQTT, Topic: base + "/d/+", TopicParams: base + "/d/{device}"}, "{device}")
		opener := runtime.Opener{Name: config.TransportMQTT, Open: func(ctx context.Context) (transport.Transport, error) {
			t, err := mqtt.New(mcfg, nil)
			if err != nil {
				return nil, err
			}
			return t, t.Open(ctx)
		}}
		rt, err := orderedRuntime(ctx, cfg, b, opener, e.handle)
		if err != nil {
			return Result{}, err
		}
		defer rt.Stop(context.Background())
		pcfg := mcfg // its own client ID: the runtime's transport has a "pub" connection too
		pcfg.ClientID = "bench-ordered-" + watermill.NewShortUUID() + "-sender-{conn}"
		pub, err := mqtt.NewPublisher(pcfg, nil)
		if err != nil {
			return Result{}, err
		}
		defer pub.Close()
		var n atomic.Int64
		return e.publish(ctx, opts, func(payload []byte) error {
			key := "d" + strconv.Itoa(int(n.Add(1))%orderedKeys)
			return pub.Publish(base+"/d/"+key, message.NewMessage(watermill.NewUUID(), payload))
		})
	}
}
