package runtime

import (
	"context"
	"fmt"
	"net/url"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// newTracerProvider returns the OTLP exporting provider, or nil when
// tracing is off. The exporter connects lazily: a collector that is down
// costs dropped spans, never a failed start.
func newTracerProvider(ctx context.Context, cfg config.Config) (*sdktrace.TracerProvider, error) {
	t := cfg.Tracing
	if !t.Enabled() {
		return nil, nil
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch t.Protocol {
	case config.TracingHTTP:
		var opts []otlptracehttp.Option
		if t.Endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(httpTracesURL(t.Endpoint)))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	default:
		var opts []otlptracegrpc.Option
		if t.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(t.Endpoint))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	res := resource.NewSchemaless(semconv.ServiceName(cfg.Service))
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(t.Ratio()))),
	), nil
}

// httpTracesURL adds OTLP/HTTP's traces path to an endpoint without a path.
func httpTracesURL(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Path != "" && u.Path != "/") {
		return endpoint
	}
	u.Path = "/v1/traces"
	return u.String()
}

// tracing makes the spans of the runtime: a consumer span per delivery, a
// span per handler run and a producer span per publish, after
// OpenTelemetry's messaging conventions. Trace context travels as W3C
// traceparent and tracestate in message metadata, which every transport
// carries (MQTT user properties, AMQP 0-9-1 headers, AMQP 1.0 application
// properties). A nil *tracing is off and makes nothing.
type tracing struct {
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	incoming string // config.TracingConfig.Incoming
}

// AttributeRedelivered says that the broker delivered the message before
// (not one of OpenTelemetry's conventions, which have no such attribute).
const AttributeRedelivered = attribute.Key("messaging.message.redelivered")

// newTracing returns the runtime's tracing, nil when tp is nil; incoming is
// the policy for a message's own trace context (config.IncomingParent,
// the default when empty, IncomingLink or IncomingIgnore).
func newTracing(tp trace.TracerProvider, incoming string) *tracing {
	if tp == nil {
		return nil
	}
	return &tracing{
		tracer:   tp.Tracer("github.com/hexmill/hexmill/app"),
		prop:     propagation.TraceContext{},
		incoming: incoming,
	}
}

// start starts a delivery's span after the incoming policy: in the
// sender's trace (parent), in a new trace linked to the sender's span
// (link: the service's sampler decides, as for any new trace), or in a
// new trace that ignores it.
func (t *tracing) start(msg *message.Message, name string) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	switch t.incoming {
	case config.IncomingLink:
		remote := trace.SpanContextFromContext(t.prop.Extract(context.Background(), propagation.MapCarrier(msg.Metadata)))
		opts = append(opts, trace.WithNewRoot())
		if remote.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: remote}))
		}
		return t.tracer.Start(msg.Context(), name, opts...)
	case config.IncomingIgnore:
		return t.tracer.Start(msg.Context(), name, append(opts, trace.WithNewRoot())...)
	}
	parent := t.prop.Extract(msg.Context(), propagation.MapCarrier(msg.Metadata))
	return t.tracer.Start(parent, name, opts...)
}

// consumer starts a delivery's span, continuing the trace the message
// carries, if any, or linking to it (see start); the span ends when the message is settled or handed
// back. Its name has the binding's topic (a filter such as
// devices/+/telemetry, as the conventions ask for a name of low
// cardinality), its attributes the concrete one. Attributes are made only
// for a span that is recorded.
func (t *tracing) consumer(b config.Binding) message.HandlerMiddleware {
	if t == nil {
		return nil
	}
	template := b.Topic
	if template == "" {
		template = b.Transport // an Aliyun binding may take every topic
	}
	name := "process " + template
	fixed := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(b.Transport),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process"),
		semconv.MessagingDestinationTemplate(template),
	}
	if b.Group != "" {
		fixed = append(fixed, semconv.MessagingConsumerGroupName(b.Group))
	}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx, span := t.start(msg, name)
			defer span.End()
			if span.IsRecording() {
				topic := msg.Metadata.Get(ports.MetadataTopic)
				if topic == "" {
					topic = b.Topic
				}
				span.SetAttributes(fixed...)
				span.SetAttributes(semconv.MessagingDestinationName(topic), semconv.MessagingMessageID(msg.UUID))
				if id := msg.Metadata.Get(ports.MetadataCorrelationID); id != "" {
					span.SetAttributes(semconv.MessagingMessageConversationID(id))
				}
				if msg.Metadata.Get(ports.MetadataRedelivered) == "true" {
					span.SetAttributes(AttributeRedelivered.Bool(true))
				}
			}
			msg.SetContext(ctx)
			produced, err := h(msg)
			if err != nil {
				span.SetStatus(codes.Error, "handed back to the broker")
				span.RecordError(err)
			}
			return produced, err
		}
	}
}

// handler wraps a handler's run, its retries and its poisoning in a span:
// retries are its events, and a poisoned message sets its status (see
// the poison link). Events published and poisoned messages carry its
// context.
func (t *tracing) handler(handler string) message.HandlerMiddleware {
	if t == nil {
		return nil
	}
	name, attr := "handle "+handler, attribute.String("handler", handler)
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx, span := t.tracer.Start(msg.Context(), name)
			defer span.End()
			if span.IsRecording() {
				span.SetAttributes(attr)
			}
			msg.SetContext(ctx)
			produced, err := h(msg)
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
			}
			return produced, err
		}
	}
}

// publish runs send in a producer span and puts its context into msg's
// metadata first; the span covers the wait for the broker's confirm.
func (t *tracing) publish(ctx context.Context, system, topic string, msg *message.Message, send func() error) error {
	ctx, span := t.tracer.Start(ctx, "send "+topic, trace.WithSpanKind(trace.SpanKindProducer))
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingSystemKey.String(system),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("send"),
			semconv.MessagingDestinationName(topic),
			semconv.MessagingMessageID(msg.UUID),
		)
	}
	t.prop.Inject(ctx, propagation.MapCarrier(msg.Metadata))
	err := send()
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// retried notes a retry on the handler's span.
func retried(ctx context.Context, attempt int, err error) {
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		span.AddEvent("retry", trace.WithAttributes(attribute.Int("attempt", attempt), attribute.String("error", transport.Truncate(err.Error(), transport.MetadataValueBytes))))
	}
}

// poisoned marks the handler's span with the reason a message was poisoned.
func poisoned(ctx context.Context, reason error) {
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		span.SetStatus(codes.Error, "poisoned: "+reason.Error())
		span.SetAttributes(attribute.String("poison.reason", reason.Error()))
	}
}
