package config

import (
	"fmt"
	"time"

	"github.com/hexmill/hexmill/ports"
)

// Delay stores (RetryConfig.DelayStore): where the delayed retries of a
// transport without native delays are parked.
const (
	DelayStoreNone     = ""
	DelayStorePostgres = "postgres"
)

// DefaultDelayPollInterval is retry.delay_poll_interval when it is unset.
const DefaultDelayPollInterval = time.Second

// MaxDelayedRetries bounds the length of a delayed-retry list: each
// attempt's reason travels with the message in metadata, whose values are
// bounded (transport.MetadataValueBytes).
const MaxDelayedRetries = 20

// DelayedRetries is the list of delayed retries of the handler bound by
// key: its binding's retry_delayed when set, else retry.delayed.
func (c Config) DelayedRetries(key string) []time.Duration {
	if b, ok := c.Handlers[key]; ok && b.RetryDelayed != nil {
		return b.RetryDelayed
	}
	return c.Retry.Delayed
}

// checkDelayed validates retry.delayed, retry.delay_store,
// retry.delay_poll_interval and every binding's retry_delayed.
func (c Config) checkDelayed() error {
	if err := checkDelayList("retry.delayed", c.Retry.Delayed); err != nil {
		return err
	}
	switch c.Retry.DelayStore {
	case DelayStoreNone:
	case DelayStorePostgres:
		if !c.Postgres.Enabled() {
			return &ports.FieldError{Field: "retry.delay_store", Fix: "postgres needs the postgres section: set postgres.url (or postgres.host), or remove retry.delay_store"}
		}
	default:
		return &ports.FieldError{Field: "retry.delay_store", Fix: fmt.Sprintf("%q is not a delay store; use postgres, or leave it empty (RabbitMQ bindings delay natively)", c.Retry.DelayStore)}
	}
	if c.Retry.DelayPollInterval < 0 {
		return &ports.FieldError{Field: "retry.delay_poll_interval", Fix: "must be a positive duration, e.g. 1s (0: the default)"}
	}
	for _, name := range sortedKeys(c.Handlers) {
		b := c.Handlers[name]
		path := "handlers." + name
		if err := checkDelayList(path+".retry_delayed", b.RetryDelayed); err != nil {
			return err
		}
		if len(c.DelayedRetries(name)) == 0 || c.Retry.DelayStore != DelayStoreNone {
			continue
		}
		switch b.Transport {
		case TransportMQTT, TransportAliyun, TransportMemory:
			field := "retry.delayed"
			if b.RetryDelayed != nil {
				field = path + ".retry_delayed"
			}
			return &ports.FieldError{Field: field, Fix: fmt.Sprintf("%s consumes from %s, which cannot delay a message itself: set retry.delay_store: postgres "+
				"(with the postgres section), or set %s.retry_delayed: [] to turn delayed retries off for it", path, b.Transport, path)}
		}
	}
	return nil
}

func checkDelayList(field string, delays []time.Duration) error {
	if len(delays) > MaxDelayedRetries {
		return &ports.FieldError{Field: field, Fix: fmt.Sprintf("has %d delays; at most %d", len(delays), MaxDelayedRetries)}
	}
	for i, d := range delays {
		if d <= 0 {
			return &ports.FieldError{Field: field, Fix: fmt.Sprintf("item %d: want a positive duration such as 30s, 5m", i+1)}
		}
		if d%time.Millisecond != 0 {
			return &ports.FieldError{Field: field, Fix: fmt.Sprintf("item %d: %s is finer than a millisecond; delays are kept in milliseconds", i+1, d)}
		}
	}
	return nil
}
