package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"

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

	"github.com/hexmill/hexmill/ports"
)

// TracingConfig turns on OpenTelemetry tracing. It is off unless Endpoint
// or the standard OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; off, no span is made and no
// middleware is added.
type TracingConfig struct {
	// Endpoint is the OTLP collector's URL, for example
	// http://127.0.0.1:4317 (gRPC) or http://127.0.0.1:4318 (HTTP; the
	// path /v1/traces is added when the URL has none). http:// sends in
	// clear text, https:// with TLS.
	Endpoint string `yaml:"endpoint"`
	// Protocol is "grpc" (the default) or "http/protobuf".
	Protocol string `yaml:"protocol"`
	// Sampling is the ratio of new traces recorded, 0 to 1 (default 1). A
	// message that carries a trace follows its producer's decision.
	Sampling *float64 `yaml:"sampling"`
}

// Tracing protocols.
const (
	TracingGRPC = "grpc"
	TracingHTTP = "http/protobuf"
)

// envOTLPEndpoints are the standard variables that turn tracing on when
// Endpoint is empty; the exporters read them themselves.
var envOTLPEndpoints = []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"}

// enabled reports whether tracing is on.
func (c TracingConfig) enabled() bool {
	if c.Endpoint != "" {
		return true
	}
	for _, name := range envOTLPEndpoints {
		if os.Getenv(name) != "" {
			return true
		}
	}
	return false
}

func (c TracingConfig) sampling() float64 {
	if c.Sampling == nil {
		return 1
	}
	return *c.Sampling
}

// Validate checks the section without connecting anything.
func (c TracingConfig) Validate() error {
	switch c.Protocol {
	case "", TracingGRPC, TracingHTTP:
	default:
		return fieldError("tracing.protocol", fmt.Sprintf("unknown protocol %q; use %q or %q", c.Protocol, TracingGRPC, TracingHTTP))
	}
	if s := c.sampling(); s < 0 || s > 1 {
		return fieldError("tracing.sampling", fmt.Sprintf("%v is not a ratio; use a number from 0 to 1", s))
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fieldError("tracing.endpoint", "want the collector's URL, such as http://127.0.0.1:4317")
		}
	}
	return nil
}

// newTracerProvider returns the OTLP exporting provider, or nil when
// tracing is off. The exporter connects lazily: a collector that is down
// costs dropped spans, never a failed start.
func newTracerProvider(ctx context.Context, cfg Config) (*sdktrace.TracerProvider, error) {
	t := cfg.Tracing
	if !t.enabled() {
		return nil, nil
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch t.Protocol {
	case TracingHTTP:
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
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(t.sampling()))),
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
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

// AttributeRedelivered says that the broker delivered the message before
// (not one of OpenTelemetry's conventions, which have no such attribute).
const AttributeRedelivered = attribute.Key("messaging.message.redelivered")

func newTracing(tp trace.TracerProvider) *tracing {
	if tp == nil {
		return nil
	}
	return &tracing{
		tracer: tp.Tracer("github.com/hexmill/hexmill/app"),
		prop:   propagation.TraceContext{},
	}
}

// consumer starts a delivery's span, continuing the trace the message
// carries, if any; the span ends when the message is settled or handed
// back. Its name has the binding's topic (a filter such as
// devices/+/telemetry, as the conventions ask for a name of low
// cardinality), its attributes the concrete one. Attributes are made only
// for a span that is recorded.
func (t *tracing) consumer(b Binding) message.HandlerMiddleware {
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
			parent := t.prop.Extract(msg.Context(), propagation.MapCarrier(msg.Metadata))
			ctx, span := t.tracer.Start(parent, name, trace.WithSpanKind(trace.SpanKindConsumer))
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
// Runtime.poison). Events published and poisoned messages carry its
// context.
func (t *tracing) handler(handler string) message.HandlerMiddleware {
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
		span.AddEvent("retry", trace.WithAttributes(attribute.Int("attempt", attempt), attribute.String("error", err.Error())))
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

// flusher is a tracer provider that can export what it holds.
type flusher interface {
	ForceFlush(context.Context) error
}

// flushTraces exports the spans still held; stop calls it after the drain
// and before connections close.
func (r *Runtime) flushTraces(ctx context.Context) error {
	if r.ownTracer != nil {
		if err := r.ownTracer.Shutdown(ctx); err != nil {
			return fmt.Errorf("tracing: export at stop: %w", err)
		}
		return nil
	}
	if f, ok := r.tracerProvider.(flusher); ok {
		if err := f.ForceFlush(ctx); err != nil {
			return fmt.Errorf("tracing: export at stop: %w", err)
		}
	}
	return nil
}

// traceHandler adds trace_id and span_id to a log record whose context
// carries a span.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
