package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/ports"
)

// maxInjectBytes bounds a message injected over HTTP.
const maxInjectBytes = 1 << 20

// OpsServer serves /healthz, /readyz, /metrics and, on the in-memory
// transport, /inject/{handler}.
type OpsServer struct {
	server   *http.Server
	listener net.Listener
	done     chan error
}

// Addr is where the server listens.
func (s *OpsServer) Addr() string { return s.listener.Addr().String() }

type opsParams struct {
	fx.In
	Lifecycle fx.Lifecycle
	Config    config.Config
	Logger    *slog.Logger
	Runtime   *runtime.Runtime
	Registry  *prometheus.Registry
	Broker    *memory.Transport
}

func newOpsServer(p opsParams) *OpsServer {
	if p.Config.HTTPAddr == "off" {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := p.Runtime.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /inject/{handler}", injectHandler(p.Config, p.Broker))

	s := &OpsServer{server: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	p.Lifecycle.Append(fx.Hook{
		OnStart: func(context.Context) error {
			l, err := net.Listen("tcp", p.Config.HTTPAddr)
			if err != nil {
				return fmt.Errorf("ops http: %w (set http_addr to a free address, or \"off\")", err)
			}
			s.listener = l
			s.done = make(chan error, 1)
			go func() { s.done <- s.server.Serve(l) }()
			p.Logger.Info("ops http listening", "addr", l.Addr().String())
			return nil
		},
		OnStop: func(ctx context.Context) error {
			err := s.server.Shutdown(ctx)
			if serveErr := <-s.done; !errors.Is(serveErr, http.ErrServerClosed) {
				err = errors.Join(err, serveErr)
			}
			return err
		},
	})
	return s
}

// injectHandler publishes the request body to the topic a handler is bound
// to, when that binding is on the in-memory transport: the way to try the
// service by hand without a broker.
func injectHandler(cfg config.Config, broker *memory.Transport) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("handler")
		b, ok := cfg.Handlers[name]
		if !ok {
			http.Error(w, fmt.Sprintf("no handler %q; bound handlers: %v\n", name, slices.Sorted(maps.Keys(cfg.Handlers))), http.StatusNotFound)
			return
		}
		if b.Transport != config.TransportMemory {
			http.Error(w, fmt.Sprintf("handler %q is bound to %s: publish to its broker instead\n", name, b.Transport), http.StatusConflict)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxInjectBytes))
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		if !json.Valid(body) {
			// Not refused: bad input is what the poison target is for.
			w.Header().Set("Warning", `199 `+cfg.Service+` "body is not valid JSON"`)
		}
		msg := message.NewMessage(watermill.NewUUID(), body)
		if id := r.Header.Get("X-Correlation-ID"); id != "" {
			msg.Metadata.Set(ports.MetadataCorrelationID, id)
		}
		// A caller's W3C trace context continues in the message's trace.
		for _, k := range []string{transport.MetadataTraceParent, transport.MetadataTraceState} {
			if v := r.Header.Get(k); v != "" {
				msg.Metadata.Set(k, v)
			}
		}
		if err := broker.Publish(b.Topic, msg); err != nil {
			http.Error(w, "publish: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = fmt.Fprintf(w, "published %s to %s\n", msg.UUID, b.Topic)
	}
}
