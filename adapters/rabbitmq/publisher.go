package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// PublisherOptions are the event binding options a publisher accepts.
var PublisherOptions = []string{"exchange", "mandatory", "persistent"}

// PublishSettings resolves an event binding's options over the
// transport's publish configuration. Unknown keys are an error.
func PublishSettings(base PublishConfig, options map[string]string) (PublishConfig, error) {
	out := base
	for _, k := range sortedKeys(options) {
		v := options[k]
		switch k {
		case "exchange":
			out.Exchange = v
		case "mandatory", "persistent":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return out, fmt.Errorf("options.%s: must be true or false", k)
			}
			if k == "mandatory" {
				out.Mandatory = &b
			} else {
				out.Persistent = &b
			}
		default:
			return out, fmt.Errorf("options.%s: unknown RabbitMQ publish option; use %s", k, strings.Join(PublisherOptions, ", "))
		}
	}
	return out, nil
}

// Publisher publishes to one exchange, with the message's topic as routing
// key. It is safe for concurrent use.
//
// Each of its publish.channels channels is long-lived and in confirm mode;
// a Publish call writes its messages and then waits for their confirms,
// while other calls write on the same channel: confirms are pipelined, not
// awaited one round trip per message. Publish returns nil only for
// messages the broker confirmed (ack) and, when mandatory, routed to a
// queue.
type Publisher struct {
	client                         *Transport
	exchange                       string
	mandatory, persistent, confirm bool
	confirmTimeout, outageWait     time.Duration
	slots                          []*pubSlot
	next                           atomic.Uint64

	closeMu  sync.RWMutex
	closed   bool
	closing  chan struct{}  // closed by Close: Publish calls stop waiting
	inflight sync.WaitGroup // Publish calls
	wg       sync.WaitGroup // basic.return recorders, one per channel
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a publisher with settings cfg (see PublishSettings),
// for publish settings other than the Config's.
func (c *Transport) NewPublisher(cfg PublishConfig) (*Publisher, error) {
	full := Config{Publish: cfg}
	full.SetDefaults()
	cfg = full.Publish
	if cfg.Channels < 1 || cfg.ConfirmTimeout <= 0 || cfg.OutageWait < 0 {
		return nil, errors.New("rabbitmq: publish settings out of range")
	}
	p := &Publisher{
		client: c, exchange: cfg.Exchange,
		mandatory: *cfg.Mandatory, persistent: *cfg.Persistent, confirm: *cfg.Confirm,
		confirmTimeout: cfg.ConfirmTimeout, outageWait: cfg.OutageWait, closing: make(chan struct{}),
	}
	for range cfg.Channels {
		p.slots = append(p.slots, &pubSlot{p: p})
	}
	return p, nil
}

// Publisher returns a publisher (a *Publisher) for an event binding: the
// transport's publish settings with the binding's options ("exchange",
// "mandatory", "persistent") over them.
func (c *Transport) Publisher(options map[string]string) (message.Publisher, error) {
	cfg, err := PublishSettings(c.cfg.Publish, options)
	if err != nil {
		return nil, err
	}
	return c.NewPublisher(cfg)
}

// Publish implements message.Publisher. The topic is the routing key. It
// returns nil once every message is confirmed; otherwise an error naming
// each failed message (errors.Is ErrUnroutable, ErrNacked,
// ErrNotConfirmed, ErrNotConnected).
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.closeMu.RLock()
	if p.closed {
		p.closeMu.RUnlock()
		return ErrClosed
	}
	p.inflight.Add(1)
	p.closeMu.RUnlock()
	defer p.inflight.Done()

	// One bound for the call: waiting out a resource alarm, then the
	// confirms. The call also ends when the first message's context ends
	// (a handler's message settled, or its subscriber closed at stop) or
	// the publisher closes.
	start := time.Now()
	var timer *time.Timer
	deadline := func() <-chan time.Time {
		if timer == nil {
			timer = time.NewTimer(p.confirmTimeout - time.Since(start))
		}
		return timer.C
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	ctx := context.Background()
	if len(msgs) > 0 {
		ctx = msgs[0].Context()
	}
	if err := p.client.awaitUnblocked(ctx, deadline); err != nil {
		errs := make([]error, len(msgs))
		for i, msg := range msgs {
			errs[i] = fmt.Errorf("message %s: %w", msg.UUID, err)
		}
		return errors.Join(errs...)
	}

	slot := p.slots[p.next.Add(1)%uint64(len(p.slots))]
	var errs []error
	// What each sent message waits for: two pointers, so that a call of
	// many messages allocates one small slice; the return key is rebuilt
	// from the message when its confirm is looked at.
	type sent struct {
		cc *confirmChannel
		dc *amqp.DeferredConfirmation
	}
	waits := make([]sent, len(msgs))
	for i, msg := range msgs {
		pub := marshal(msg, p.persistent)
		if err := checkHeaders(pub); err != nil {
			errs = append(errs, fmt.Errorf("message %s: %w", msg.UUID, err))
			continue
		}
		cc, dc, err := slot.publish(p.exchange, topic, pub)
		if err != nil {
			errs = append(errs, fmt.Errorf("message %s: %w", msg.UUID, err))
			continue
		}
		waits[i] = sent{cc, dc}
	}
	if p.confirm {
		var gaveUp error // why the call stopped waiting for confirms
		for i, w := range waits {
			if w.dc == nil {
				continue
			}
			// Confirms come in order and often several at once: most are
			// in by the time they are looked at, and need no timer.
			if !confirmed(w.dc) {
				if gaveUp == nil {
					select {
					case <-w.dc.Done():
					case <-deadline():
						gaveUp = fmt.Errorf("%w: no confirm within %s%s", ErrNotConfirmed, p.confirmTimeout, p.client.blockedNote())
					case <-ctx.Done():
						gaveUp = fmt.Errorf("%w: given up waiting for the confirm: %w", ErrNotConfirmed, ctx.Err())
					case <-p.closing:
						gaveUp = fmt.Errorf("%w: the publisher closed while waiting for the confirm", ErrNotConfirmed)
					case <-p.client.closing:
						gaveUp = fmt.Errorf("%w: the transport closed while waiting for the confirm", ErrNotConfirmed)
					}
				}
				// The wait ends once: past it, every confirm still
				// missing is an error, not a wait without end; a confirm
				// in by then counts, whatever ended the wait.
				if gaveUp != nil && !confirmed(w.dc) {
					errs = append(errs, fmt.Errorf("message %s: %w", msgs[i].UUID, gaveUp))
					continue
				}
			}
			if err := w.cc.outcome(w.dc, returnKey{msgs[i].UUID, p.exchange, topic}, p.mandatory); err != nil {
				errs = append(errs, fmt.Errorf("message %s: %w", msgs[i].UUID, err))
			}
		}
	}
	return errors.Join(errs...)
}

// confirmed reports whether dc's confirm (ack or nack) came, without
// waiting.
func confirmed(dc *amqp.DeferredConfirmation) bool {
	select {
	case <-dc.Done():
		return true
	default:
		return false
	}
}

// Close ends the Publish calls in progress (a call still waiting for a
// confirm or for a resource alarm to clear fails with ErrNotConfirmed or
// ErrBlocked) and closes the channels.
// It is safe to call more than once.
func (p *Publisher) Close() error {
	p.closeMu.Lock()
	already := p.closed
	p.closed = true
	p.closeMu.Unlock()
	if already {
		return nil
	}
	close(p.closing)
	p.inflight.Wait()
	for _, s := range p.slots {
		s.close()
	}
	p.wg.Wait()
	return nil
}

// pubSlot is one long-lived channel of a publisher, reopened on demand
// after it closes.
type pubSlot struct {
	p  *Publisher
	mu sync.RWMutex // held for writing only to (re)open the channel
	cc *confirmChannel
}

// confirmChannel is one AMQP channel in confirm mode. amqp091-go tracks
// each publish's confirm (a DeferredConfirmation); the channel adds the
// basic.returns and the reason it closed.
type confirmChannel struct {
	ch     *amqp.Channel
	closes chan *amqp.Error

	mu       sync.Mutex
	returned map[returnKey]*amqp.Return
	reason   string
}

// returnKey identifies a returned message: basic.return carries no
// delivery tag.
type returnKey struct{ id, exchange, routingKey string }

// publish sends msg on the slot's channel, opening it when needed; the
// confirm is nil when confirms are off.
func (s *pubSlot) publish(exchange, key string, msg amqp.Publishing) (*confirmChannel, *amqp.DeferredConfirmation, error) {
	s.mu.RLock()
	cc := s.cc
	s.mu.RUnlock()
	if cc == nil || cc.ch.IsClosed() {
		var err error
		if cc, err = s.open(cc); err != nil {
			return nil, nil, err
		}
	}
	dc, err := cc.ch.PublishWithDeferredConfirm(exchange, key, s.p.mandatory, false, msg)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrNotConnected, err)
	}
	return cc, dc, nil
}

// open replaces the slot's channel old (nil at first) unless another
// caller already did.
func (s *pubSlot) open(old *confirmChannel) (*confirmChannel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cc != old && s.cc != nil && !s.cc.ch.IsClosed() {
		return s.cc, nil
	}
	conn, err := s.p.client.connection(context.Background(), s.p.outageWait)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("%w: open channel: %w", ErrNotConnected, err)
	}
	cc := &confirmChannel{ch: ch, closes: ch.NotifyClose(make(chan *amqp.Error, 1)), returned: map[returnKey]*amqp.Return{}}
	if s.p.confirm {
		if err := ch.Confirm(false); err != nil {
			_ = ch.Close()
			return nil, fmt.Errorf("%w: confirm mode: %w", ErrNotConnected, err)
		}
	}
	if s.p.mandatory && s.p.confirm {
		// Two unbuffered listeners served in turn by one goroutine: the
		// client's reader hands a return to the second only after the
		// first was recorded, and reads the confirm that follows only
		// after that. So a message's return is recorded before its
		// confirmation is visible.
		r1 := ch.NotifyReturn(make(chan amqp.Return))
		r2 := ch.NotifyReturn(make(chan amqp.Return))
		s.p.wg.Add(1)
		go func() {
			defer s.p.wg.Done()
			cc.recordReturns(r1, r2)
		}()
	}
	s.cc = cc
	return cc, nil
}

func (cc *confirmChannel) recordReturns(r1, r2 <-chan amqp.Return) {
	for r := range r1 {
		cc.mu.Lock()
		cc.returned[returnKey{r.MessageId, r.Exchange, r.RoutingKey}] = &r
		cc.mu.Unlock()
		<-r2
	}
	for range r2 { // drain until the channel closes
	}
}

// outcome turns a completed confirmation into the publish's result.
func (cc *confirmChannel) outcome(dc *amqp.DeferredConfirmation, key returnKey, mandatory bool) error {
	if !dc.Acked() {
		if cc.ch.IsClosed() {
			return fmt.Errorf("%w: %s", ErrNotConfirmed, cc.closeReason())
		}
		return fmt.Errorf("%w (basic.nack: a queue refused it, e.g. at max length with reject-publish)", ErrNacked)
	}
	if !mandatory {
		return nil
	}
	cc.mu.Lock()
	r, returned := cc.returned[key]
	delete(cc.returned, key)
	cc.mu.Unlock()
	if returned {
		return fmt.Errorf("%w: exchange %q, routing key %q: %d %s", ErrUnroutable, r.Exchange, r.RoutingKey, r.ReplyCode, r.ReplyText)
	}
	return nil
}

func (cc *confirmChannel) closeReason() string {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.reason == "" {
		cc.reason = "channel closed"
		select {
		case e := <-cc.closes:
			if e != nil {
				cc.reason = "channel closed: " + e.Error()
			}
		default:
		}
	}
	return cc.reason
}

// close closes the slot's channel; on a blocked connection it does not
// wait for the broker (see Transport.bounded).
func (s *pubSlot) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cc != nil && !s.cc.ch.IsClosed() {
		_ = s.p.client.bounded(s.cc.ch.Close)
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// CheckTarget verifies, with passive declares, that what an event binding
// publishes to exists: its exchange, or for the default exchange the queue
// named by the routing key. A publish to a missing exchange fails and one
// to the default exchange without such a queue is unroutable; found at
// start, the binding can be named and fixed before a message loops.
func (c *Transport) CheckTarget(ctx context.Context, routingKey string, options map[string]string) error {
	cfg, err := PublishSettings(c.cfg.Publish, options)
	if err != nil {
		return err
	}
	conn, err := c.connection(ctx, 0)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: check %q: %w", routingKey, err)
	}
	defer ch.Close() // a failed passive declare closes it already
	if cfg.Exchange != "" {
		if err := ch.ExchangeDeclarePassive(cfg.Exchange, "topic", false, false, false, false, nil); err != nil {
			return fmt.Errorf("exchange %q does not exist: declare it (transports.rabbitmq.exchanges) or fix options.exchange: %w", cfg.Exchange, err)
		}
		return nil
	}
	if _, err := ch.QueueDeclarePassive(routingKey, false, false, false, false, nil); err != nil {
		return fmt.Errorf("no queue %q for the default exchange to route to: declare it (transports.rabbitmq.queues), or publish to an exchange (options.exchange): %w", routingKey, err)
	}
	return nil
}
