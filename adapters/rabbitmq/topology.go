package rabbitmq

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// MismatchError is returned when an exchange or queue already exists on the
// broker with other properties or arguments than configured. RabbitMQ never
// changes a queue's arguments in place: delete the queue (after draining
// it) or change the configuration to match.
type MismatchError struct {
	Kind   string // "queue" or "exchange"
	Name   string
	Detail string // the broker's words, e.g. inequivalent arg 'x-queue-type' ...
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s %q exists on the broker with different settings (%s); make the configuration match it, or delete the %s and restart", e.Kind, e.Name, e.Detail, e.Kind)
}

var inequivalent = regexp.MustCompile(`inequivalent arg '([^']+)' for (?:queue|exchange) '[^']*' in vhost '[^']*': (.*)`)

// declareError turns a PRECONDITION_FAILED from a declare into a
// MismatchError; other errors are wrapped with what was declared.
func declareError(kind, name string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
		detail := ae.Reason
		if m := inequivalent.FindStringSubmatch(ae.Reason); m != nil {
			detail = fmt.Sprintf("argument %s: %s", m[1], m[2])
		}
		return &MismatchError{Kind: kind, Name: name, Detail: detail}
	}
	return fmt.Errorf("declare %s %q: %w", kind, name, err)
}

// table converts string arguments to an AMQP table: whole numbers become
// numbers, true/false booleans, the rest strings.
func table(args map[string]string) amqp.Table {
	t := amqp.Table{}
	for k, v := range args {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			t[k] = n
		} else if b, err := strconv.ParseBool(v); err == nil && (v == "true" || v == "false") {
			t[k] = b
		} else {
			t[k] = v
		}
	}
	return t
}

func (q QueueConfig) arguments() amqp.Table {
	t := table(q.Arguments)
	if q.Type == QueueQuorum {
		// classic is the broker's default; sending it explicitly would
		// mismatch queues declared without the argument.
		t["x-queue-type"] = q.Type
	}
	if q.MessageTTL > 0 {
		t["x-message-ttl"] = q.MessageTTL.Milliseconds()
	}
	if q.Expires > 0 {
		t["x-expires"] = q.Expires.Milliseconds()
	}
	if q.MaxLength > 0 {
		t["x-max-length"] = int64(q.MaxLength)
	}
	if q.MaxLengthBytes > 0 {
		t["x-max-length-bytes"] = int64(q.MaxLengthBytes)
	}
	if q.Overflow != "" {
		t["x-overflow"] = q.Overflow
	}
	if q.DeadLetterExchange != "" {
		t["x-dead-letter-exchange"] = q.DeadLetterExchange
	}
	if q.DeadLetterRoutingKey != "" {
		t["x-dead-letter-routing-key"] = q.DeadLetterRoutingKey
	}
	if q.DeliveryLimit > 0 {
		t["x-delivery-limit"] = int64(q.DeliveryLimit)
	}
	return t
}

// declareQueue declares q. A PRECONDITION_FAILED closes the channel, so the
// caller must use a fresh channel after an error.
func declareQueue(ch *amqp.Channel, q QueueConfig) error {
	durable := q.Durable == nil || *q.Durable
	if _, err := ch.QueueDeclare(q.Name, durable, q.AutoDelete, false, false, q.arguments()); err != nil {
		return declareError("queue", q.Name, err)
	}
	return nil
}

// declareDelayQueue declares the durable queue name that parks messages
// of queue source for d: they expire after d and are dead-lettered
// through the default exchange back to source (delayed retries, see
// DelayQueueName).
func declareDelayQueue(ch *amqp.Channel, name, source string, d time.Duration) error {
	args := amqp.Table{
		"x-message-ttl":             d.Milliseconds(),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": source,
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		return declareError("queue", name, err)
	}
	return nil
}

// declareTopology declares every exchange, queue and binding of c on conn,
// on a channel of its own.
func declareTopology(conn *amqp.Connection, c Config) error {
	if len(c.Exchanges)+len(c.Queues)+len(c.Bindings) == 0 {
		return nil
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("topology channel: %w", err)
	}
	defer func() { _ = ch.Close() }()
	for _, e := range c.Exchanges {
		durable := e.Durable == nil || *e.Durable
		if err := ch.ExchangeDeclare(e.Name, e.Type, durable, e.AutoDelete, e.Internal, false, table(e.Arguments)); err != nil {
			return declareError("exchange", e.Name, err)
		}
	}
	for _, q := range c.Queues {
		if err := declareQueue(ch, q); err != nil {
			return err
		}
	}
	for _, b := range c.Bindings {
		if b.Queue != "" {
			if err := ch.QueueBind(b.Queue, b.RoutingKey, b.Exchange, false, table(b.Arguments)); err != nil {
				return fmt.Errorf("bind queue %q to exchange %q with key %q: %w", b.Queue, b.Exchange, b.RoutingKey, err)
			}
			continue
		}
		if err := ch.ExchangeBind(b.DestinationExchange, b.RoutingKey, b.Exchange, false, table(b.Arguments)); err != nil {
			return fmt.Errorf("bind exchange %q to exchange %q with key %q: %w", b.DestinationExchange, b.Exchange, b.RoutingKey, err)
		}
	}
	return nil
}
