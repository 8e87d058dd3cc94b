package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// ErrPublish marks a failure to publish an event (broker down, not
// confirmed, unroutable). The message being handled is not at fault: after
// its retries it is handed back to its broker for redelivery, never sent to
// the poison target; unless the event itself is at fault
// (transport.ErrMessageTooLarge), which no redelivery can cure.
var ErrPublish = errors.New("publish failed")

type publishError struct{ err error }

func (e publishError) Error() string   { return e.err.Error() }
func (e publishError) Unwrap() []error { return []error{e.err, ErrPublish} }

// eventPublisher publishes domain events where their bindings say: JSON
// payload, a new message ID, the event type and the correlation ID in
// metadata.
type eventPublisher struct {
	routes   map[string]route // by event type, config.NormalKey
	bound    []string         // the event types bound, as configured
	poisonTo route
	all      []message.Publisher
	tracing  *tracing // nil: off
}

type route struct {
	field     string // events.<type> or poison
	topic     string
	transport string
	publisher message.Publisher
	failing   *failing
	// outbox writes the route's events in the transaction of the context
	// they are published with; nil when PostgreSQL is off. Its
	// destination is the event binding's name, which the relay maps back
	// to publisher.
	outbox message.Publisher
}

// failing tracks since when a route's publishes fail: readiness reports a
// binding that fails for longer than publish_unready_after.
type failing struct {
	mu    sync.Mutex
	since time.Time // zero while publishing works
	err   error
}

// publish publishes msgs and records whether it worked.
func (r route) publish(msgs ...*message.Message) error { return r.publishTo(r.topic, msgs...) }

// publishTo publishes msgs to topic and records whether it worked.
func (r route) publishTo(topic string, msgs ...*message.Message) error {
	err := r.publisher.Publish(topic, msgs...)
	r.failing.mu.Lock()
	switch {
	case err == nil:
		r.failing.since, r.failing.err = time.Time{}, nil
	case r.failing.since.IsZero():
		r.failing.since, r.failing.err = time.Now(), err
	default:
		r.failing.err = err
	}
	r.failing.mu.Unlock()
	return err
}

// failingFor is how long the route's publishes have failed, and the last
// error; 0 while they work.
func (r route) failingFor(now time.Time) (time.Duration, error) {
	r.failing.mu.Lock()
	defer r.failing.mu.Unlock()
	if r.failing.since.IsZero() {
		return 0, nil
	}
	return now.Sub(r.failing.since), r.failing.err
}

var _ ports.Publisher = (*eventPublisher)(nil)

// newEventPublisher opens the event bindings' and the poison target's
// publishers; with a database (db not nil), events published in a
// PostgreSQL transaction go to the outbox instead, and poison.transport
// postgres writes dead letters to it.
func newEventPublisher(cfg config.Config, transports map[string]transport.Transport, registry *prometheus.Registry, t *tracing, db *postgres.DB) (*eventPublisher, error) {
	outbox := db != nil
	p := &eventPublisher{routes: map[string]route{}, tracing: t}
	var publishTime *prometheus.HistogramVec
	if registry != nil {
		var err error
		if publishTime, err = register(registry, newPublishTime(cfg.Namespace())); err != nil {
			return nil, err
		}
	}
	open := func(field string, e config.EventBinding) (route, error) {
		pub, err := transports[e.Transport].Publisher(e.Options)
		if err != nil {
			return route{}, fmt.Errorf("%s: %w", field, err)
		}
		if publishTime != nil {
			pub = timedPublisher{Publisher: pub, name: e.Transport, time: publishTime}
		}
		p.all = append(p.all, pub)
		return route{field: field, topic: e.Topic, transport: e.Transport, publisher: pub, failing: &failing{}}, nil
	}
	p.bound = slices.Sorted(maps.Keys(cfg.Events))
	for _, eventType := range slices.Sorted(maps.Keys(cfg.Events)) {
		r, err := open("events."+eventType, cfg.Events[eventType])
		if err != nil {
			_ = p.Close()
			return nil, err
		}
		if outbox {
			if r.outbox, err = postgres.NewOutboxPublisher(eventType); err != nil {
				_ = p.Close()
				return nil, err
			}
		}
		p.routes[config.NormalKey(eventType)] = r
	}
	r, err := openPoison(cfg, db, open)
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	p.poisonTo = r
	return p, nil
}

// Publish implements ports.Publisher.
func (p *eventPublisher) Publish(ctx context.Context, events ...ports.Event) error {
	for _, e := range events {
		r, ok := p.routes[config.NormalKey(e.EventType())]
		if !ok {
			return fmt.Errorf("publish %s: no binding; add events.%s with its transport and topic to the configuration (bound: %v)", e.EventType(), e.EventType(), p.bound)
		}
		payload, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("publish %s: %w", e.EventType(), err)
		}
		msg := message.NewMessage(watermill.NewUUID(), payload)
		msg.Metadata.Set(ports.MetadataEventType, e.EventType())
		if id := ports.CorrelationID(ctx); id != "" {
			msg.Metadata.Set(ports.MetadataCorrelationID, id)
		}
		msg.SetContext(ctx)
		if r.outbox != nil {
			if _, ok := postgres.TxFrom(ctx); ok {
				if a, ok := e.(ports.AggregateEvent); ok {
					msg.Metadata.Set(postgres.MetadataAggregateKey, a.AggregateID())
				}
				if err := p.write(ctx, r, msg); err != nil {
					return publishError{fmt.Errorf("publish %s to %s through the outbox: %w", e.EventType(), r.topic, err)}
				}
				continue
			}
		}
		if err := p.send(ctx, r, msg); err != nil {
			return publishError{fmt.Errorf("publish %s to %s: %w", e.EventType(), r.topic, err)}
		}
	}
	return nil
}

// write puts msg in the outbox, in the transaction ctx carries: the relay
// publishes it once the transaction committed. With tracing on, the
// producer span is this write, and the trace context it injects travels
// with the row, as the direct path's does with the message.
func (p *eventPublisher) write(ctx context.Context, r route, msg *message.Message) error {
	write := func() error { return r.outbox.Publish(r.topic, msg) }
	if p.tracing == nil {
		return write()
	}
	return p.tracing.publish(ctx, r.transport, r.topic, msg, write)
}

// relayPublishers are the event bindings' publishers by binding name, the
// outbox's destinations. The relay does not close them; the runtime does,
// after the relay stopped.
func (p *eventPublisher) relayPublishers() map[string]message.Publisher {
	pubs := make(map[string]message.Publisher, len(p.routes))
	for _, r := range p.routes {
		if r.outbox != nil {
			pubs[r.field[len("events."):]] = relayPublisher{r}
		}
	}
	return pubs
}

// relayPublisher publishes the relay's messages on a route, so that a
// binding the relay cannot publish to makes the service unready as the
// direct path's failures do.
type relayPublisher struct{ r route }

func (p relayPublisher) Publish(topic string, msgs ...*message.Message) error {
	return p.r.publishTo(topic, msgs...)
}

// Close does nothing: the runtime closes the route's publisher.
func (relayPublisher) Close() error { return nil }

// send publishes msg on r, in a producer span when tracing is on.
func (p *eventPublisher) send(ctx context.Context, r route, msg *message.Message) error {
	if p.tracing == nil {
		return r.publish(msg)
	}
	return p.tracing.publish(ctx, r.transport, r.topic, msg, func() error { return r.publish(msg) })
}

// Close closes every publisher.
func (p *eventPublisher) Close() error {
	var errs []error
	for _, pub := range p.all {
		if err := pub.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close publisher: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Publisher is the domain's ports.Publisher. It exists before the runtime
// starts (handlers are built with it) and publishes once the runtime has
// opened its transports; before that, and after stop, Publish returns an
// error.
type Publisher struct {
	mu    sync.RWMutex
	inner *eventPublisher
}

var _ ports.Publisher = (*Publisher)(nil)

// NewPublisher returns a publisher for New to connect.
func NewPublisher() *Publisher { return &Publisher{} }

// Publish implements ports.Publisher.
func (p *Publisher) Publish(ctx context.Context, events ...ports.Event) error {
	p.mu.RLock()
	inner := p.inner
	p.mu.RUnlock()
	if inner == nil {
		return publishError{errors.New("publish: the service is not running")}
	}
	return inner.Publish(ctx, events...)
}

func (p *Publisher) set(inner *eventPublisher) {
	p.mu.Lock()
	p.inner = inner
	p.mu.Unlock()
}
