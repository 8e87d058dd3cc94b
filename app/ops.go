package app

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
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

// The ops server's fixed bounds: a request's headers must come within
// opsReadHeaderTimeout and fit in opsMaxHeaderBytes (its endpoints take
// none of any size).
const (
	opsReadHeaderTimeout = 5 * time.Second
	opsMaxHeaderBytes    = 16 << 10
)

// readyLogEvery is how often an unchanged reason for not being ready is
// logged again, so that a probe polling /readyz does not flood the log.
const readyLogEvery = time.Minute

// OpsServer serves /healthz, /readyz, /metrics and, when ops.inject is
// on, /inject/{handler} (see docs/security.md).
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
	ready := &readiness{logger: p.Logger}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		// The body names the parts only: the reasons carry hosts, users,
		// client IDs and driver errors, which go to the log.
		parts := ready.check(p.Runtime.NotReady())
		if len(parts) > 0 {
			http.Error(w, "not ready: "+strings.Join(parts, ", "), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.Registry, promhttp.HandlerOpts{}))
	if p.Config.Ops.InjectOn() {
		mux.Handle("POST /inject/{handler}", bearer(p.Config.Ops.Token.Reveal(), injectHandler(p.Config, p.Broker, p.Logger)))
	}

	ops := p.Config.Ops
	s := &OpsServer{server: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: opsReadHeaderTimeout,
		ReadTimeout:       ops.ReadTimeout,
		WriteTimeout:      ops.WriteTimeout,
		IdleTimeout:       ops.IdleTimeout,
		MaxHeaderBytes:    opsMaxHeaderBytes,
	}}
	p.Lifecycle.Append(fx.Hook{
		OnStart: func(context.Context) error {
			l, err := net.Listen("tcp", p.Config.HTTPAddr)
			if err != nil {
				return fmt.Errorf("ops http: %w (set http_addr to a free address, or \"off\")", err)
			}
			s.listener = l
			s.done = make(chan error, 1)
			go func() { s.done <- s.server.Serve(l) }()
			p.Logger.Info("ops http listening", "addr", l.Addr().String(), "inject", ops.InjectOn(), "inject_token", ops.Token != "")
			if ops.InjectOn() && ops.Token == "" && !p.Config.OnlyMemory() {
				p.Logger.Warn("ops.inject is on without ops.token: whoever reaches the ops port can publish to the handlers bound to memory; set ops.token or turn ops.inject off")
			}
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

// readiness logs why the service is not ready when the failing parts change,
// and again every readyLogEvery while they last.
type readiness struct {
	logger *slog.Logger

	mu     sync.Mutex
	last   string // the parts last logged, "" for ready
	logged time.Time
}

// check logs nr when due and returns the parts' names.
func (r *readiness) check(nr []runtime.NotReady) []string {
	parts := make([]string, len(nr))
	reasons := make([]string, len(nr))
	for i, n := range nr {
		parts[i], reasons[i] = n.Part, n.Err.Error()
	}
	key := strings.Join(parts, ", ")
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if key == r.last && (key == "" || now.Sub(r.logged) < readyLogEvery) {
		return parts
	}
	if key == "" {
		r.logger.Info("ready")
	} else {
		r.logger.Warn("not ready", "parts", key, "reasons", strings.Join(reasons, "; "))
	}
	r.last, r.logged = key, now
	return parts
}

// bearer asks for Authorization: Bearer token when token is set.
func bearer(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	// Compared as SHA-256 sums in constant time: neither the token's bytes
	// nor its length show in the time an answer takes.
	want := sha256.Sum256([]byte("Bearer " + token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ops"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// injectHandler publishes the request body to the topic a handler is bound
// to, when that binding is on the in-memory transport: the way to try the
// service by hand without a broker. Bodies are never logged.
func injectHandler(cfg config.Config, broker *memory.Transport, logger *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("handler")
		b, ok := cfg.Handlers[name]
		if !ok {
			// Not the bound handlers' names: the caller may be anyone.
			http.Error(w, "no such handler", http.StatusNotFound)
			return
		}
		if b.Transport != config.TransportMemory {
			http.Error(w, "handler is not on the memory transport: publish to its broker instead", http.StatusConflict)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxInjectBytes))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				http.Error(w, fmt.Sprintf("body larger than %d bytes", maxInjectBytes), http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "read body", http.StatusBadRequest)
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
			logger.Warn("inject: publish failed", "handler", name, "bytes", len(body), "error", err)
			http.Error(w, "publish failed; try again later", http.StatusServiceUnavailable)
			return
		}
		logger.Debug("injected", "handler", name, "message_uuid", msg.UUID, "bytes", len(body))
		w.WriteHeader(http.StatusAccepted)
		_, _ = fmt.Fprintf(w, "published %s to %s\n", msg.UUID, b.Topic)
	}
}
