package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// parkTimeout bounds one park (a publish confirm, an INSERT): a park that
// takes longer fails, and its message is handed back to its broker.
const parkTimeout = 30 * time.Second

// parker parks a message whose handler failed after the in-process
// retries for its binding's next delayed retry (docs/retries.md): on the
// binding's transport when it delays natively (transport.Delayer), else in
// the delay store. The poison link calls it; its message is acked once
// parked, and its worker moves on.
type parker struct {
	handler string
	topic   string
	delays  []time.Duration
	sc      transport.SubscriberConfig
	native  transport.Delayer    // nil: the store
	store   *postgres.DelayStore // used when native is nil
	logger  *slog.Logger
}

// deliveryAttempt is msg's delivery number: 1 on its first delivery, n+1
// after its n-th delay. A value that is not a number from 1 counts as 1.
func deliveryAttempt(msg *message.Message) int {
	n, err := strconv.Atoi(msg.Metadata.Get(transport.MetadataDeliveryAttempt))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// attemptReasons is the reasons of the earlier deliveries with this
// one's added: one line each, "<delivery>: <reason>", shortened so that
// the whole fits MetadataValueBytes (each line keeps an equal share).
func attemptReasons(msg *message.Message, n int, err error) string {
	var lines []string
	if prev := msg.Metadata.Get(transport.MetadataAttemptReasons); prev != "" {
		lines = strings.Split(prev, "\n")
	}
	reason := strings.ReplaceAll(err.Error(), "\n", " ")
	lines = append(lines, strconv.Itoa(n)+": "+reason)
	share := (transport.MetadataValueBytes - (len(lines) - 1)) / len(lines)
	for i, l := range lines {
		lines[i] = transport.Truncate(l, share)
	}
	return strings.Join(lines, "\n")
}

// handle parks msg for its next delay, or poisons it with every
// delivery's reason after the last one. It returns what the poison link
// returns: nil when msg may be acked.
func (k *parker) handle(p poisoner, msg *message.Message, err error) ([]*message.Message, error) {
	n := deliveryAttempt(msg)
	reasons := attemptReasons(msg, n, err)
	if n > len(k.delays) {
		detachMetadata(msg)
		msg.Metadata.Set(transport.MetadataAttemptReasons, reasons)
		all := fmt.Errorf("%s after %d deliveries (retry.delayed): %s", poisonedRetries, n, strings.ReplaceAll(reasons, "\n", "; "))
		return p.poison(msg, all, poisonedRetries, false)
	}
	delay := k.delays[n-1]
	out := message.NewMessage(msg.UUID, msg.Payload)
	out.Metadata = maps.Clone(msg.Metadata)
	delete(out.Metadata, ports.MetadataRedelivered)
	out.Metadata.Set(transport.MetadataDeliveryAttempt, strconv.Itoa(n+1))
	out.Metadata.Set(transport.MetadataAttemptReasons, reasons)
	ctx, cancel := context.WithTimeout(msg.Context(), parkTimeout)
	defer cancel()
	var perr error
	if k.native != nil {
		perr = k.native.Delay(ctx, k.sc, k.topic, delay, out)
	} else {
		perr = k.store.Park(ctx, k.handler, delay, out)
	}
	o := deliveryOf(msg.Context())
	if perr != nil {
		err = errors.Join(err, fmt.Errorf("park for the delayed retry after %s: %w", delay, perr))
		// Handed back as the poison link hands back: after the retry
		// backoff (a broker that redelivers at once must not spin), and
		// poisoned past max_handbacks.
		if p.handbacks != nil {
			h := p.handbacks.add(handbackKey(msg, p.binding.Topic))
			if p.maxHandbacks > 0 && h > p.maxHandbacks {
				return p.poison(msg, fmt.Errorf("%s: %w", handbackReason(h-1, err), err), poisonedHandbacks, false)
			}
			wait(msg.Context(), p.abort, handbackDelay(p.retry, h))
		}
		o.set(handedBackPark)
		return nil, err
	}
	if p.handbacks != nil {
		p.handbacks.forget(msg, p.binding.Topic)
	}
	o.set(parkedDelayed)
	k.logger.WarnContext(msg.Context(), "handler failed; message parked for a delayed retry", "handler", k.handler, "message_id", msg.UUID,
		"delivery_attempt", n, "delay", delay, "err", transport.Truncate(err.Error(), transport.MetadataValueBytes))
	return nil, nil
}

// setUpDelays prepares the delayed retries of every handler that has
// some: a native transport declares its delay queues; the others share
// one delay store, whose poller hands their due messages to their chains
// (deliverDelayed). It runs in Start, before the consumers start.
func (r *Runtime) setUpDelays(ctx context.Context) error {
	r.parkers = map[string]*parker{}
	var stored []string
	for _, h := range r.handlers {
		name := h.Name()
		key, _ := config.BindingKey(r.cfg.Handlers, name)
		delays := r.cfg.DelayedRetries(key)
		if len(delays) == 0 {
			continue
		}
		b := r.bindings[name]
		k := &parker{handler: name, topic: b.Topic, delays: delays, logger: r.logger, sc: transport.SubscriberConfig{Handler: name, Group: b.Group,
			Concurrency: b.Concurrency, Options: b.Options, MaxMessageBytes: maxMessageBytes(b, r.transports[b.Transport])}}
		if d, ok := r.transports[b.Transport].(transport.Delayer); ok {
			if err := d.DeclareDelays(ctx, k.sc, b.Topic, delays); err != nil {
				return fmt.Errorf("handlers.%s: retry.delayed: %w", key, err)
			}
			k.native = d
		} else {
			switch {
			case r.cfg.Retry.DelayStore != config.DelayStorePostgres:
				return r.cfg.FieldError("retry.delay_store", fmt.Sprintf("handlers.%s consumes from %s, which cannot delay a message itself: set retry.delay_store: postgres, "+
					"or handlers.%s.retry_delayed: [] to turn delayed retries off for it", key, b.Transport, key))
			case r.db == nil:
				return r.cfg.FieldError("retry.delay_store", "postgres needs the database: set the postgres section")
			}
			stored = append(stored, name)
		}
		r.parkers[name] = k
	}
	if len(stored) == 0 {
		return nil
	}
	r.delayHandles = map[string]message.HandlerFunc{}
	handlers := map[string]func(*message.Message) error{}
	for _, name := range stored {
		handlers[name] = func(msg *message.Message) error { return r.deliverDelayed(name, msg) }
	}
	poll := r.cfg.Retry.DelayPollInterval
	if poll == 0 {
		poll = config.DefaultDelayPollInterval
	}
	store, err := postgres.NewDelayStore(r.db, postgres.DelayStoreConfig{Handlers: handlers, PollInterval: poll}, NewWatermillLogger(r.logger))
	if err != nil {
		return err
	}
	r.delayStore = store
	for _, name := range stored {
		r.parkers[name].store = store
	}
	return nil
}

// deliverDelayed runs a message the delay store found due through its
// handler's chain, as its subscriber would: the chain acks it (nil: the
// store deletes it) or hands it back (an error: the store keeps it and
// tries again). Its context ends when stop gives up on the drain.
func (r *Runtime) deliverDelayed(name string, msg *message.Message) error {
	ctx, cancel := context.WithCancel(msg.Context())
	defer cancel()
	stop := context.AfterFunc(r.abort, cancel)
	defer stop()
	msg.SetContext(ctx)
	_, err := r.delayHandles[name](msg)
	return err
}

// startDelays starts the delay store's poller once every chain is built.
func (r *Runtime) startDelays() {
	if r.delayStore != nil {
		r.delayStore.Start()
	}
}

// stopDelayIntake makes the delay store claim no more due messages (stop
// protocol step 1, with the subscriptions' intake).
func (r *Runtime) stopDelayIntake() {
	if r.delayStore != nil {
		r.delayStore.StopClaiming()
	}
}

// stopDelays waits for the store's deliveries under way, bounded by ctx.
func (r *Runtime) stopDelays(ctx context.Context) error {
	if r.delayStore == nil {
		return nil
	}
	return r.delayStore.Stop(ctx)
}
