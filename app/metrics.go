package app

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
// <service> is the service setting ("-" as "_"); subscriber_name and
// publisher_name are the transport. watermill's
// middleware and decorators build label maps per message, and its
// subscriber decorator passes every message through one more goroutine and
// starts another per message to wait for its ack; in the end-to-end
// benchmark that was a tenth of the service's CPU. Here a handler's series
// are resolved once at start, and a publish looks its series up without
// allocating.

// handlerMetrics records the handlers' metrics.
type handlerMetrics struct {
	handlerTime *prometheus.HistogramVec
	received    *prometheus.CounterVec
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
	var err error
	if m.handlerTime, err = register(registry, m.handlerTime); err != nil {
		return nil, err
	}
	if m.received, err = register(registry, m.received); err != nil {
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
	ok, failed := m.handlerTime.WithLabelValues(handler, "true"), m.handlerTime.WithLabelValues(handler, "false")
	acked, nacked := m.received.WithLabelValues(handler, transport, "acked"), m.received.WithLabelValues(handler, transport, "nacked")
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			start := time.Now()
			produced, err := h(msg)
			took := time.Since(start).Seconds()
			if err != nil {
				failed.Observe(took)
				nacked.Inc()
			} else {
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
