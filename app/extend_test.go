package app_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
	"github.com/hexmill/hexmill/ports"
)

// The extension points, each through the whole fx graph as a service uses
// them: a handler that records what it sees, bound by the service's
// defaults.

type greeting struct {
	Word string `yaml:"word"`
}

// seen records what the test handler got.
type seen struct {
	mu       sync.Mutex
	payloads []string
	got      chan struct{}
}

func newSeen() *seen { return &seen{got: make(chan struct{}, 16)} }

func (s *seen) handler(name string) ports.Handler {
	return ports.HandlerFunc{HandlerName: name, Func: func(_ context.Context, msg ports.Message) error {
		s.mu.Lock()
		s.payloads = append(s.payloads, string(msg.Payload))
		s.mu.Unlock()
		s.got <- struct{}{}
		return nil
	}}
}

func (s *seen) wait(t *testing.T) string {
	t.Helper()
	select {
	case <-s.got:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler got no message")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.payloads[len(s.payloads)-1]
}

// run starts svc with env (the ops server off) and returns the memory
// broker; the service stops when the test ends.
func run(t *testing.T, svc app.Service, e app.Env) *memory.Transport {
	t.Helper()
	var broker *memory.Transport
	e[config.EnvPrefix(svc.Name)+"HTTP_ADDR"] = "off"
	a := app.New(svc, e, fx.Populate(&broker), fx.NopLogger)
	if err := a.Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return broker
}

func bindMemory(handler string) func(*config.Config) {
	return func(c *config.Config) {
		c.Handlers[handler] = config.Binding{Transport: config.TransportMemory, Topic: "in"}
	}
}

func send(t *testing.T, b *memory.Transport, payload string) {
	t.Helper()
	if err := b.Publish("in", message.NewMessage(watermill.NewUUID(), []byte(payload))); err != nil {
		t.Fatal(err)
	}
}

// AsHandler registers a handler whose constructor asks for a section of
// the configuration (AsConfig), set here from the environment.
func TestAsHandlerAndAsConfig(t *testing.T) {
	s := newSeen()
	var word string
	svc := app.Service{Name: "ext", Defaults: bindMemory("greet"), Options: []fx.Option{
		app.AsConfig("greeting", func() greeting { return greeting{Word: "hello"} }),
		app.AsHandler(func(g greeting) ports.Handler { word = g.Word; return s.handler("greet") }),
	}}
	b := run(t, svc, app.Env{"EXT_GREETING_WORD": "ni hao"})
	if word != "ni hao" {
		t.Fatalf("the handler's section = %q, want the environment's", word)
	}
	send(t, b, "x")
	if got := s.wait(t); got != "x" {
		t.Fatalf("handler got %q", got)
	}
}

// AsMiddleware adds a middleware to every handler's chain.
func TestAsMiddleware(t *testing.T) {
	s := newSeen()
	var names []string
	var mu sync.Mutex
	svc := app.Service{Name: "ext", Defaults: bindMemory("h"), Options: []fx.Option{
		app.AsHandler(func() ports.Handler { return s.handler("h") }),
		app.AsMiddleware(func() runtime.Middleware {
			return func(handler string, next message.HandlerFunc) message.HandlerFunc {
				return func(msg *message.Message) ([]*message.Message, error) {
					mu.Lock()
					names = append(names, handler)
					mu.Unlock()
					msg.Payload = append(msg.Payload, '!')
					return next(msg)
				}
			}
		}),
	}}
	b := run(t, svc, app.Env{})
	send(t, b, "x")
	if got := s.wait(t); got != "x!" {
		t.Fatalf("handler got %q, want what the middleware made of it", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(names, ",") != "h" {
		t.Fatalf("middleware ran for %v, want [h]", names)
	}
}

// AsFormat offers a format that a binding names.
func TestAsFormat(t *testing.T) {
	s := newSeen()
	svc := app.Service{Name: "ext", Defaults: func(c *config.Config) {
		c.Handlers["h"] = config.Binding{Transport: config.TransportMemory, Topic: "in", Format: "upper"}
	}, Options: []fx.Option{
		app.AsHandler(func() ports.Handler { return s.handler("h") }),
		app.AsFormat("upper", func(msg *message.Message) error {
			msg.Payload = []byte(strings.ToUpper(string(msg.Payload)))
			return nil
		}),
	}}
	b := run(t, svc, app.Env{})
	send(t, b, "abc")
	if got := s.wait(t); got != "ABC" {
		t.Fatalf("handler got %q, want it translated by the format", got)
	}
}

// loopConfig is the section of the test transport.
type loopConfig struct {
	Prefix string `yaml:"prefix"`
}

// AsTransport plugs a new transport in, with its own section, without any
// change to app: here one that delivers, prefixed, what the memory broker
// has on the binding's topic.
func TestAsTransport(t *testing.T) {
	s := newSeen()
	var opened loopConfig
	var service string
	var broker *memory.Transport
	svc := app.Service{Name: "ext", Defaults: func(c *config.Config) {
		c.Handlers["h"] = config.Binding{Transport: "loop", Topic: "in"}
		c.Poison.Transport = config.TransportMemory
	}, Options: []fx.Option{
		app.AsHandler(func() ports.Handler { return s.handler("h") }),
		fx.Populate(&broker),
		app.AsTransport("loop", func() loopConfig { return loopConfig{Prefix: "default:"} },
			func(cfg loopConfig, e app.TransportEnv) (transport.Transport, error) {
				opened, service = cfg, e.Service
				return loop{Transport: broker, prefix: cfg.Prefix}, nil
			}),
	}}
	b := run(t, svc, app.Env{"EXT_TRANSPORTS_LOOP_PREFIX": "loop:"})
	if opened.Prefix != "loop:" || service != "ext" {
		t.Fatalf("opened with %+v for %q, want the section from the environment, for ext", opened, service)
	}
	send(t, b, "x")
	if got := s.wait(t); got != "loop:x" {
		t.Fatalf("handler got %q, want it through the loop transport", got)
	}
}

// loop is the memory transport, its subscribers' messages prefixed.
type loop struct {
	*memory.Transport
	prefix string
}

func (l loop) Subscriber(sc transport.SubscriberConfig) (message.Subscriber, error) {
	sub, err := l.Transport.Subscriber(sc)
	if err != nil {
		return nil, err
	}
	return prefixing{Subscriber: sub, prefix: l.prefix}, nil
}

type prefixing struct {
	message.Subscriber
	prefix string
}

func (p prefixing) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	in, err := p.Subscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for m := range in {
			m.Payload = append([]byte(p.prefix), m.Payload...)
			out <- m
		}
	}()
	return out, nil
}
