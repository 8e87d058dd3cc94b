package runtime

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
)

// detachMetadata gives msg a copy of its metadata before the runtime
// writes into it: the handler was given the metadata itself (as
// ports.Metadata.Attributes) and may still read it.
func detachMetadata(msg *message.Message) {
	md := make(message.Metadata, len(msg.Metadata)+8) // room for the poison keys
	maps.Copy(md, msg.Metadata)
	msg.Metadata = md
}

// stampPoisoned writes when msg was poisoned, and keeps when it was first
// poisoned (a replayed message carries it).
func stampPoisoned(msg *message.Message) {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	msg.Metadata.Set(transport.MetadataPoisonedAt, now)
	if msg.Metadata.Get(transport.MetadataFirstPoisonedAt) == "" {
		msg.Metadata.Set(transport.MetadataFirstPoisonedAt, now)
	}
}

// openPoison opens the poison target's route: PostgreSQL's dead-letter
// table for poison.transport postgres, else the transport's publisher.
func openPoison(cfg config.Config, db *postgres.DB, open func(string, config.EventBinding) (route, error)) (route, error) {
	if cfg.Poison.Transport != config.PoisonPostgres {
		return open("poison", cfg.Poison)
	}
	if db == nil {
		return route{}, errors.New("poison: transport postgres needs the postgres section")
	}
	return route{field: "poison", topic: cfg.Poison.Topic, transport: config.PoisonPostgres, publisher: db.DeadLetterPublisher(), failing: &failing{}}, nil
}

// deadLetterScrapeTimeout bounds the count a /metrics scrape makes: a
// slow or unavailable database makes the gauge absent, never the scrape
// hang.
const deadLetterScrapeTimeout = 2 * time.Second

// deadLetters is the gauge <namespace>_dead_letters{handler_name}: the
// dead letters per handler, counted on each scrape. Only PostgreSQL's
// table can count them per handler cheaply; on a broker's poison queue
// that would mean reading every message, so there is no gauge.
type deadLetters struct {
	db       *postgres.DB
	handlers []string
	desc     *prometheus.Desc
}

func (d deadLetters) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }

func (d deadLetters) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), deadLetterScrapeTimeout)
	defer cancel()
	counts, err := d.db.CountDeadLetters(ctx)
	if err != nil {
		return // absent this scrape; failing it would hide every other metric
	}
	seen := map[string]bool{}
	for _, h := range d.handlers {
		seen[h] = true
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.GaugeValue, float64(counts[h]), h)
	}
	for h, n := range counts { // handlers no longer bound
		if !seen[h] {
			ch <- prometheus.MustNewConstMetric(d.desc, prometheus.GaugeValue, float64(n), h)
		}
	}
}

// registerDeadLetters registers the dead-letter gauge where the poison
// target can count per handler.
func (r *Runtime) registerDeadLetters() error {
	if r.db == nil || r.cfg.Poison.Transport != config.PoisonPostgres {
		return nil
	}
	d := deadLetters{db: r.db, desc: prometheus.NewDesc(r.cfg.Namespace()+"_dead_letters",
		"Dead letters (poisoned messages) in hexmill_dead_letters, per handler.", []string{"handler_name"}, nil)}
	for _, h := range r.handlers {
		d.handlers = append(d.handlers, h.Name())
	}
	_, err := register(r.registry, prometheus.Collector(d))
	return err
}
