package aliyun

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/ports"
)

// SubscriberConfig configures one Subscriber of a Transport (one handler
// binding). Handler names it in logs; Concurrency bounds the messages
// delivered to one subscription and not yet settled (the link credit
// bounds all of them together). Group is not used: the consumer group is
// the Config's. This transport takes no Options and rejects any key.
type SubscriberConfig = transport.SubscriberConfig

// Subscriber is a watermill subscriber on a Transport's links. The topic
// given to Subscribe is a filter on Aliyun's topic (MQTT style: "+" one
// level, "#" the rest; "" everything). When several subscriptions match,
// the most specific filter gets the message (exact, then wildcards, then
// ""). A message no subscription matches is held for
// Config.UnmatchedDelay, then released back to the broker and logged.
//
// A message is settled through the transport.Settler in its context: an
// ack accepts it, a nack releases it. Ack and Nack are bridged onto the
// Settler unless the Subscribe context is transport.SettledByConsumer
// (transport.Handout keeps the books).
//
// The stop protocol (see transport.Transport): Subscribe returns once every
// connection has its link attached and credit issued; cancelling its
// context closes the output channel, and once no subscription is left the
// links get no more credit; messages already delivered can still be
// settled. Message contexts are not derived from the Subscribe context;
// they end when the message is settled. Close releases every message of
// this subscriber that is not settled (an ack given before Close counts),
// which ends their contexts.
type Subscriber struct {
	c           *Transport
	name        string
	concurrency int

	closing   chan struct{}
	closeOnce sync.Once
	subs      transport.Subscriptions[delivery] // one Handout per route
}

var _ message.Subscriber = (*Subscriber)(nil)

// Subscriber returns a subscriber (a *Subscriber) on the transport's links.
func (c *Transport) Subscriber(cfg SubscriberConfig) (message.Subscriber, error) {
	if len(cfg.Options) > 0 {
		keys := make([]string, 0, len(cfg.Options))
		for k := range cfg.Options {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return nil, fmt.Errorf("aliyun: options: %s not known; the aliyun transport takes no binding options", strings.Join(keys, ", "))
	}
	return &Subscriber{c: c, name: cfg.Handler, concurrency: cfg.Concurrency, closing: make(chan struct{})}, nil
}

// route is one subscription: a topic filter, the messages matched to it
// and waiting for a slot, in arrival order, and the Handout its pump
// hands them out through. The link credit bounds the queue.
type route struct {
	sub         *Subscriber
	filter      string
	specificity int
	h           *transport.Handout[delivery]

	mu      sync.Mutex
	queue   []pending
	holding bool          // the pump took a message and has not handed it out yet
	stopped bool          // the pump has ended: enqueue refuses
	signal  chan struct{} // holds a token while the queue may have messages
	queued  atomic.Int32  // len(queue), read without mu by allAhead
}

// pending is a message matched to a route, not yet handed out.
type pending struct {
	l  *link
	am *amqp.Message
	wm *message.Message
}

// delivery is what settling a message handed out needs.
type delivery struct {
	l  *link
	am *amqp.Message
}

// settle accepts or releases the message of d.
func settle(d delivery, acked bool) { d.l.settle(d.am, acked) }

// Subscribe implements message.Subscriber; topic is an Aliyun topic filter.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	select {
	case <-s.closing:
		return nil, ErrClosed
	default:
	}
	if err := s.c.Open(ctx); err != nil {
		return nil, err
	}
	r := &route{
		sub: s, filter: topic, specificity: specificity(topic),
		h: transport.NewHandout(ctx, s.concurrency, settle), signal: make(chan struct{}, 1),
	}
	if !s.subs.Add(r.h) || !s.c.subs.Add(r.h) {
		r.h.Close()
		return nil, ErrClosed
	}
	s.c.addRoute(r)
	r.h.Go(r.pump)
	s.c.logger.Debug("aliyun: subscribed", watermill.LogFields{"handler": s.name, "topic_filter": topic})
	return r.h.Output(), nil
}

// Close ends every subscription, releases the messages delivered and not
// settled (accepts those acked with Ack), and waits until every message
// it handed out is settled. Safe to call more than once.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	s.subs.Close()
	return nil
}

// enqueue hands p to r's consumer at once when it waits for a message and
// nothing is ahead of p (Handout.Offer), else queues p for r's pump; false
// once the pump has ended.
func (r *route) enqueue(p pending) bool {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return false
	}
	if len(r.queue) == 0 && !r.holding && r.h.Offer(p.wm, delivery{l: p.l, am: p.am}) {
		r.mu.Unlock()
		p.l.taken()
		return true
	}
	r.queue = append(r.queue, p)
	r.queued.Store(int32(len(r.queue)))
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
	return true
}

// pump hands r's queue out, in arrival order, a message per free slot,
// until intake stops (the Subscribe context ended, or Close). Then the
// route leaves the transport, and what it still queued goes to deliver,
// which finds it another subscription or releases it.
func (r *route) pump() {
	c := r.sub.c
	for r.h.Acquire() {
		p, ok := r.next()
		if !ok {
			r.h.Release()
			break
		}
		select {
		case <-p.l.dead: // its settle could not reach the broker, which redelivers it
			r.mu.Lock()
			r.holding = false
			r.mu.Unlock()
			p.l.release(p.am)
			r.h.Release()
			continue
		default:
		}
		sent := r.h.Send(p.wm, delivery{l: p.l, am: p.am})
		r.mu.Lock()
		r.holding = false
		if !sent {
			r.queue = append([]pending{p}, r.queue...)
			r.queued.Store(int32(len(r.queue)))
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		p.l.taken()
	}
	c.removeRoute(r)
	r.mu.Lock()
	r.stopped = true
	rest := r.queue
	r.queue = nil
	r.queued.Store(0)
	r.mu.Unlock()
	for _, p := range rest {
		c.wg.Add(1)
		go c.deliver(p)
	}
}

// next takes the first message of the queue, waiting for one; false when
// intake stops first.
func (r *route) next() (pending, bool) {
	for {
		r.mu.Lock()
		if len(r.queue) > 0 {
			p := r.queue[0]
			r.queue[0] = pending{}
			r.queue = r.queue[1:]
			r.holding = true
			n := len(r.queue)
			r.queued.Store(int32(n))
			r.mu.Unlock()
			if n == handAhead-1 { // it fell behind: a waiting serve loop reads again
				r.sub.c.catchUp()
			}
			return p, true
		}
		r.mu.Unlock()
		select {
		case <-r.signal:
		case <-r.h.Stopped():
			return pending{}, false
		}
	}
}

// deliver finds a subscription for a message the link's dispatch could
// not queue at once (none matched, or the one matched ended), holding it
// for Config.UnmatchedDelay when none matches, or releases it.
func (c *Transport) deliver(p pending) {
	defer c.wg.Done()
	topic := p.wm.Metadata.Get(ports.MetadataTopic)
	held := false
	for {
		if !c.intakeOn() {
			p.l.release(p.am)
			return
		}
		if r := c.match(topic); r != nil {
			if r.enqueue(p) {
				return
			}
			continue // it ended after the match; it has left the routes
		}
		if held {
			c.unmatched(topic, p.wm.UUID)
			p.l.release(p.am)
			return
		}
		held = true
		if !c.hold(p.l) {
			p.l.release(p.am)
			return
		}
	}
}

// hold waits UnmatchedDelay; false when the consumer closes or the link
// dies first.
func (c *Transport) hold(l *link) bool {
	t := time.NewTimer(c.cfg.UnmatchedDelay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.closing:
		return false
	case <-l.dead:
		return false
	}
}

func (c *Transport) unmatched(topic, id string) {
	c.stats.unmatched.Add(1)
	c.mu.Lock()
	first := !c.loggedT[topic]
	if first && len(c.loggedT) < 1000 {
		c.loggedT[topic] = true
	}
	c.mu.Unlock()
	fields := watermill.LogFields{"topic": topic, "message_id": id}
	if first {
		c.logger.Error("aliyun: no subscription matches the topic; message released back to the broker (bind a handler to it or remove it from the consumer group's subscription)", nil, fields)
	} else {
		c.logger.Debug("aliyun: unmatched message released", fields)
	}
}

// toWatermill turns an Aliyun push into a watermill message: the payload
// untouched, the application properties as metadata, and the product key,
// device name and device ID parsed from the topic. Aliyun's topic
// application property is the wire topic (Aliyun sets it; a device
// cannot). Every other framework key (transport.FrameworkKey) and the
// keys parsed from the topic are never taken from a property: the
// delivery count says redelivered, and a topic that does not parse gives
// no product key, device name or device ID.
func toWatermill(am *amqp.Message) *message.Message {
	var payload []byte
	switch {
	case len(am.Data) == 1:
		payload = am.Data[0]
	case len(am.Data) > 1:
		payload = bytes.Join(am.Data, nil)
	default:
		switch v := am.Value.(type) {
		case []byte:
			payload = v
		case string:
			payload = []byte(v)
		}
	}
	// The message's own map takes the metadata: one map per message.
	wm := message.NewMessage(messageID(am), payload)
	md := wm.Metadata
	for k, v := range am.ApplicationProperties {
		switch {
		case k == ports.MetadataTopic:
		case transport.FrameworkKey(k), k == MetadataProductKey, k == MetadataDeviceName, k == MetadataDeviceID:
			continue
		}
		md[k] = propertyString(v)
	}
	if pk, dn, ok := ParseTopic(md[ports.MetadataTopic]); ok {
		md[MetadataProductKey] = pk
		md[MetadataDeviceName] = dn
		md[MetadataDeviceID] = DeviceID(pk, dn)
	}
	if am.Header != nil && am.Header.DeliveryCount > 0 {
		md[ports.MetadataRedelivered] = "true"
	}
	return wm
}

// messageID is the message's ID: Aliyun's messageId application
// property, else the AMQP message-id, else a new UUID.
func messageID(am *amqp.Message) string {
	if v, ok := am.ApplicationProperties[MetadataMessageID]; ok {
		if id := propertyString(v); id != "" {
			return id
		}
	}
	if am.Properties != nil && am.Properties.MessageID != nil {
		if id := propertyString(am.Properties.MessageID); id != "" {
			return id
		}
	}
	return watermill.NewUUID()
}

func propertyString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case int32:
		return strconv.FormatInt(int64(v), 10)
	case uint64:
		return strconv.FormatUint(v, 10)
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}
