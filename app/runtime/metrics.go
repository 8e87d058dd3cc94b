package runtime

import (
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
)

// The service's metrics keep the names and labels of watermill's router
// and publisher metrics:
//
//	<service>_handler_execution_time_seconds{handler_name, success}
//	<service>_subscriber_messages_received_total{handler_name, subscriber_name, acked}
//	<service>_publish_time_seconds{handler_name, publisher_name, success}
//
// and two of their own:
//
//	<service>_messages_poisoned_total{handler_name, reason}
//	    reason: invalid (bad input) or retries_exhausted
//	<service>_messages_handed_back_total{handler_name, reason}
//	    nacked for redelivery; reason: publish_failed, poison_failed, stopping,
//	    database_unavailable, park_failed
//	<service>_messages_delayed_total{handler_name}
//	    parked for a delayed retry (retry.delayed), acked
//
// and, for ordered bindings (order_by, ordered.go),
//
//	<service>_messages_without_order_key_total{handler_name}
//	    handled unordered for want of the key's attributes
//
// A poisoned message is acked (acked="acked") but its handler did not
// succeed (success="false").
// <service> is the service's name (Service.Name, "-" as "_"), not the
// instance's service setting; subscriber_name and
// publisher_name are the transport. watermill's
// middleware and decorators build label maps per message, and its
// subscriber decorator passes every message through one more goroutine and
// starts another per message to wait for its ack. Here a handler's series
// are resolved once at start, and a publish looks its series up without
// allocating.

// handlerMetrics records the handlers' metrics.
type handlerMetrics struct {
	handlerTime *prometheus.HistogramVec
	received    *prometheus.CounterVec
	poisoned    *prometheus.CounterVec
	handedBack  *prometheus.CounterVec
	delayed     *prometheus.CounterVec
}

// handlerTimeBuckets are watermill's default buckets for the handler time.
var handlerTimeBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}

func newHandlerMetrics(registry *prometheus.Registry, namespace string) (*handlerMetrics, error) {
	m := &handlerMetrics{
		handlerTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "handler_execution_time_seconds",
			Help:      "The total time elapsed while executing the handler function in seconds",
			Buckets:   handlerTimeBuckets,
		}, []string{"handler_name", "success"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "subscriber_messages_received_total",
			Help:      "The total number of messages received by the subscriber",
		}, []string{"handler_name", "subscriber_name", "acked"}),
	}
	m.poisoned = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "messages_poisoned_total",
		Help:      "Messages sent to the poison target, by reason: invalid (bad input), retries_exhausted, too_large or handed_back_too_often",
	}, []string{"handler_name", "reason"})
	m.handedBack = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "messages_handed_back_total",
		Help:      "Messages nacked for redelivery, by reason: publish_failed, poison_failed, stopping, database_unavailable, park_failed",
	}, []string{"handler_name", "reason"})
	m.delayed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "messages_delayed_total",
		Help:      "Messages parked for a delayed retry (retry.delayed) after their handler failed",
	}, []string{"handler_name"})
	var err error
	if m.delayed, err = register(registry, m.delayed); err != nil {
		return nil, err
	}
	if m.handlerTime, err = register(registry, m.handlerTime); err != nil {
		return nil, err
	}
	if m.received, err = register(registry, m.received); err != nil {
		return nil, err
	}
	if m.poisoned, err = register(registry, m.poisoned); err != nil {
		return nil, err
	}
	if m.handedBack, err = register(registry, m.handedBack); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector registered before it.
func register[C prometheus.Collector](registry *prometheus.Registry, c C) (C, error) {
	err := registry.Register(c)
	var already prometheus.AlreadyRegisteredError
	switch {
	case err == nil:
		return c, nil
	case errors.As(err, &already):
		if existing, ok := already.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("metrics: %w", err)
}

// middleware times the rest of a handler's chain and counts the message as
// acked or nacked, as the in-flight middleware settles it.
func (m *handlerMetrics) middleware(handler, transport string) message.HandlerMiddleware {
	if m == nil {
		return nil
	}
	ok, failed := m.handlerTime.WithLabelValues(handler, "true"), m.handlerTime.WithLabelValues(handler, "false")
	acked, nacked := m.received.WithLabelValues(handler, transport, "acked"), m.received.WithLabelValues(handler, transport, "nacked")
	poisoned := map[outcome]prometheus.Counter{
		poisonedInvalid: m.poisoned.WithLabelValues(handler, string(poisonedInvalid)),
		poisonedRetries: m.poisoned.WithLabelValues(handler, string(poisonedRetries)),
	}
	for _, r := range []outcome{poisonedTooLarge, poisonedHandbacks} {
		poisoned[r] = m.poisoned.WithLabelValues(handler, string(r))
	}
	handedBack := map[outcome]prometheus.Counter{}
	for _, r := range []outcome{handedBackPublish, handedBackPoison, handedBackStopping, handedBackDatabase, handedBackPark} {
		handedBack[r] = m.handedBack.WithLabelValues(handler, string(r))
	}
	delayed := m.delayed.WithLabelValues(handler)
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			d := deliveryOf(msg.Context())
			start := time.Now()
			produced, err := h(msg)
			took := time.Since(start).Seconds()
			var o outcome
			if d != nil {
				o = d.outcome
			}
			switch {
			case err != nil:
				failed.Observe(took)
				nacked.Inc()
				if c, ok := handedBack[o]; ok {
					c.Inc()
				}
			case o == parkedDelayed:
				failed.Observe(took)
				acked.Inc()
				delayed.Inc()
			case o != "":
				failed.Observe(took)
				acked.Inc()
				poisoned[o].Inc()
			default:
				ok.Observe(took)
				acked.Inc()
			}
			return produced, err
		}
	}
}

func newPublishTime(namespace string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "publish_time_seconds",
		Help:      "The time that a publishing attempt (success or not) took in seconds",
	}, []string{"handler_name", "publisher_name", "success"})
}

// timedPublisher observes every publish's time.
type timedPublisher struct {
	message.Publisher
	name string // the transport
	time *prometheus.HistogramVec
}

// noHandler is the handler_name of a publish outside a handler.
const noHandler = "<no handler>"

func (p timedPublisher) Publish(topic string, msgs ...*message.Message) error {
	handler := noHandler
	if len(msgs) > 0 {
		if h := handlerName(msgs[0].Context()); h != "" {
			handler = h
		}
	}
	start := time.Now()
	err := p.Publisher.Publish(topic, msgs...)
	success := "true"
	if err != nil {
		success = "false"
	}
	p.time.WithLabelValues(handler, p.name, success).Observe(time.Since(start).Seconds())
	return err
}
