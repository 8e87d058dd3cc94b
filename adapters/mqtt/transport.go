package mqtt

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
)

// Transport is the MQTT transport of one service: one publisher connection
// shared by every event binding (made on the first Publisher call), and one
// connection per subscriber, so that each binding has its own persistent
// session, Receive Maximum and ack order.
type Transport struct {
	cfg    Config
	logger watermill.LoggerAdapter

	mu     sync.Mutex
	closed bool
	pub    *Publisher
	subs   map[*Subscriber]struct{}
}

// New validates cfg; it connects nothing yet.
func New(cfg Config, logger watermill.LoggerAdapter) (*Transport, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Transport{cfg: cfg, logger: logger, subs: map[*Subscriber]struct{}{}}, nil
}

// Open does nothing: each binding connects on its own, the publisher
// connection on the first Publisher call, a subscriber on its first
// Subscribe.
func (t *Transport) Open(context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	return nil
}

// Publisher returns a publisher for one event binding, with its options
// ("qos", "retain", "mandatory"), on the transport's publisher
// connection. Its Close does nothing: Transport.Close disconnects.
func (t *Transport) Publisher(options map[string]string) (message.Publisher, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if t.pub == nil {
		p, err := NewPublisher(t.cfg, t.logger)
		if err != nil {
			return nil, err
		}
		t.pub = p
	}
	return t.pub.WithOptions(options)
}

// Subscriber returns a subscriber (a *Subscriber) for one binding, on a
// connection of its own.
func (t *Transport) Subscriber(sc SubscriberConfig) (message.Subscriber, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	s, err := NewSubscriber(t.cfg, sc, t.logger)
	if err != nil {
		return nil, err
	}
	t.subs[s] = struct{}{}
	s.onClose = func() {
		t.mu.Lock()
		delete(t.subs, s)
		t.mu.Unlock()
	}
	return s, nil
}

// Ready reports nil only while every connection of the transport is up and
// every subscription acknowledged.
func (t *Transport) Ready() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	var errs []error
	if t.pub != nil {
		errs = append(errs, t.pub.Ready())
	}
	for s := range t.subs {
		errs = append(errs, s.Ready())
	}
	return errors.Join(errs...)
}

// Close closes what is still open: subscribers (normally closed before)
// and then the publisher connection. The subscribers close at once, so
// that their close_timeouts do not add up.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.closed = true
	subs := make([]*Subscriber, 0, len(t.subs))
	for s := range t.subs {
		subs = append(subs, s)
	}
	pub := t.pub
	t.mu.Unlock()
	errs := make([]error, len(subs), len(subs)+1)
	var wg sync.WaitGroup
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Close()
		}()
	}
	wg.Wait()
	if pub != nil {
		errs = append(errs, pub.Close())
	}
	return errors.Join(errs...)
}

// The contract with the runtime (adapters/transport).
var (
	_ transport.Transport      = (*Transport)(nil)
	_ transport.Defaulter      = (*Config)(nil)
	_ transport.Validator      = Config{}
	_ transport.OptionsChecker = Config{}
)
