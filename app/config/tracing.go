package config

import (
	"fmt"
	"net/url"
	"os"

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
	// message that carries a trace follows its producer's decision, with
	// Incoming "parent".
	Sampling *float64 `yaml:"sampling"`
	// Incoming is what a message's own trace context (its traceparent and
	// tracestate, which its sender chose) does to the spans it causes:
	// "parent" (the default, OpenTelemetry's behaviour) continues the
	// sender's trace and follows its sampling decision; "link" starts a
	// new trace, sampled by Sampling, with a link to the sender's span, so
	// that an untrusted sender cannot force every span to be recorded;
	// "ignore" starts a new trace and drops the sender's context.
	Incoming string `yaml:"incoming"`
}

// Incoming trace context policies (TracingConfig.Incoming).
const (
	IncomingParent = "parent"
	IncomingLink   = "link"
	IncomingIgnore = "ignore"
)

// Tracing protocols.
const (
	TracingGRPC = "grpc"
	TracingHTTP = "http/protobuf"
)

// envOTLPEndpoints are the standard variables that turn tracing on when
// Endpoint is empty; the exporters read them themselves.
var envOTLPEndpoints = []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"}

// Enabled reports whether tracing is on.
func (c TracingConfig) Enabled() bool {
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

// Ratio is the ratio of new traces recorded.
func (c TracingConfig) Ratio() float64 {
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
		return &ports.FieldError{Field: "tracing.protocol", Fix: fmt.Sprintf("unknown protocol %q; use %q or %q", c.Protocol, TracingGRPC, TracingHTTP)}
	}
	switch c.Incoming {
	case "", IncomingParent, IncomingLink, IncomingIgnore:
	default:
		return &ports.FieldError{Field: "tracing.incoming", Fix: fmt.Sprintf("unknown policy %q; use %q (continue the sender's trace), %q (a new trace linked to it) or %q", c.Incoming, IncomingParent, IncomingLink, IncomingIgnore)}
	}
	if s := c.Ratio(); s < 0 || s > 1 {
		return &ports.FieldError{Field: "tracing.sampling", Fix: fmt.Sprintf("%v is not a ratio; use a number from 0 to 1", s)}
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &ports.FieldError{Field: "tracing.endpoint", Fix: "want the collector's URL, such as http://127.0.0.1:4317"}
		}
		if u.User != nil {
			// It would be logged and exported with every span batch's
			// errors; OTLP credentials go in headers
			// (OTEL_EXPORTER_OTLP_HEADERS), which the exporters read
			// themselves.
			return &ports.FieldError{Field: "tracing.endpoint", Fix: "holds credentials (user@ or user:password@); remove them and pass them in OTEL_EXPORTER_OTLP_HEADERS"}
		}
	}
	return nil
}
