package runtime

import (
	"context"
	"crypto/sha256"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// Reasons of the poison copies the runtime makes itself (the
// reason_poisoned metadata; other poison copies carry the handler's error).
const (
	ReasonTooLarge            = "too_large"
	ReasonHandedBackTooOften  = "handed_back_too_often"
	metadataTruncatedKey      = "metadata_truncated"
	poisonMetadataBudgetBytes = 32 << 10
)

// maxMessageBytes is the size limit of binding b on t: the binding's,
// else the transport's, else the default.
func maxMessageBytes(b config.Binding, t transport.Transport) int {
	if b.MaxMessageBytes > 0 {
		return b.MaxMessageBytes
	}
	if s, ok := t.(transport.MessageSizer); ok && s.MaxMessageBytes() > 0 {
		return s.MaxMessageBytes()
	}
	return transport.DefaultMaxMessageBytes
}

// poisonCopy is what goes to the poison target for msg: msg itself, with
// its metadata bounded so that no broker refuses the copy for its
// headers (each value at most transport.MetadataValueBytes, all of them
// at most poisonMetadataBudgetBytes, the framework's keys first), and,
// for a message too large to handle, only the first
// transport.PoisonPayloadBytes of its payload.
func poisonCopy(msg *message.Message, tooLarge bool) *message.Message {
	if !tooLarge && metadataBytes(msg.Metadata) <= poisonMetadataBudgetBytes && maxValue(msg.Metadata) <= transport.MetadataValueBytes {
		return msg
	}
	payload := msg.Payload
	if tooLarge {
		payload = payload[:min(len(payload), transport.PoisonPayloadBytes)]
	}
	out := message.NewMessage(msg.UUID, payload)
	out.SetContext(msg.Context())
	framework := []string{middleware.ReasonForPoisonedKey, middleware.PoisonedTopicKey, middleware.PoisonedHandlerKey,
		middleware.PoisonedSubscriberKey, transport.MetadataPoisonedAt, transport.MetadataFirstPoisonedAt, ports.MetadataTopic, ports.MetadataCorrelationID,
		transport.MetadataTraceParent, transport.MetadataTraceState}
	keys := slices.DeleteFunc(slices.Sorted(maps.Keys(msg.Metadata)), func(k string) bool { return slices.Contains(framework, k) })
	budget := poisonMetadataBudgetBytes
	for _, k := range append(framework, keys...) {
		v, ok := msg.Metadata[k]
		if !ok {
			continue
		}
		k, v = transport.Truncate(k, transport.MetadataValueBytes), transport.Truncate(v, transport.MetadataValueBytes)
		if budget -= len(k) + len(v); budget < 0 {
			out.Metadata.Set(metadataTruncatedKey, "true")
			break
		}
		out.Metadata.Set(k, v)
	}
	return out
}

func metadataBytes(md message.Metadata) int {
	n := 0
	for k, v := range md {
		n += len(k) + len(v)
	}
	return n
}

func maxValue(md message.Metadata) int {
	n := 0
	for k, v := range md {
		n = max(n, len(k), len(v))
	}
	return n
}

// handbacks counts, per handler, how often a message was handed back to
// its broker, for max_handbacks. The count is process-local: it is keyed
// by a hash of the message's topic and payload (senders without a
// message ID get a new one on every delivery on MQTT and Aliyun), holds
// at most handbackEntries messages (the oldest counted is forgotten
// first), is forgotten once the message is acked, and starts again at 0
// after a restart and on another replica. Identical messages share one
// count.
type handbacks struct {
	size   atomic.Int64 // len(counts), read without the lock on every ack
	mu     sync.Mutex
	counts map[[16]byte]int
	order  [][16]byte // ring of the keys counted, oldest at next
	next   int
}

// handbackEntries bounds the messages a handbacks remembers.
const handbackEntries = 10_000

func newHandbacks() *handbacks {
	return &handbacks{counts: map[[16]byte]int{}}
}

func handbackKey(msg *message.Message, bindingTopic string) [16]byte {
	topic := msg.Metadata.Get(ports.MetadataTopic)
	if topic == "" {
		topic = bindingTopic
	}
	sum := sha256.New()
	sum.Write([]byte(topic))
	sum.Write([]byte{0})
	sum.Write(msg.Payload)
	var k [16]byte
	copy(k[:], sum.Sum(nil))
	return k
}

// add counts one more hand-back of key and returns the count.
func (h *handbacks) add(key [16]byte) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, ok := h.counts[key]
	if !ok {
		if len(h.order) < handbackEntries {
			h.order = append(h.order, key)
		} else {
			delete(h.counts, h.order[h.next])
			h.order[h.next] = key
			h.next = (h.next + 1) % handbackEntries
		}
	}
	h.counts[key] = n + 1
	h.size.Store(int64(len(h.counts)))
	return n + 1
}

// forget drops the count of msg's content, once it is settled for good;
// it hashes and locks only while something is counted, so that an ack
// costs an atomic load.
func (h *handbacks) forget(msg *message.Message, bindingTopic string) {
	if h.size.Load() == 0 {
		return
	}
	key := handbackKey(msg, bindingTopic)
	h.mu.Lock()
	delete(h.counts, key)
	h.size.Store(int64(len(h.counts)))
	h.mu.Unlock()
}

// handbackDelay is how long a message waits before it is handed back for
// the n-th time: the retry backoff (retry.initial_interval, multiplied by
// retry.multiplier per hand-back, at most retry.max_interval), so that a
// broker that redelivers at once (a RabbitMQ requeue) does not spin.
func handbackDelay(cfg config.RetryConfig, n int) time.Duration {
	d := cfg.InitialInterval
	for i := 1; i < n && d < cfg.MaxInterval; i++ {
		d = time.Duration(float64(d) * cfg.Multiplier)
	}
	return min(d, cfg.MaxInterval)
}

// wait sleeps d unless ctx or abort ends first.
func wait(ctx, abort context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-abort.Done():
	}
}

// handbackReason is the poison reason of a message handed back too often.
func handbackReason(n int, cause error) string {
	return ReasonHandedBackTooOften + ": handed back " + strconv.Itoa(n) + " times, last: " + cause.Error()
}
