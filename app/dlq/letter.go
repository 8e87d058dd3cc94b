// Package dlq is the dlq subcommand of every service binary
// (app.Main): list, show, replay and purge the messages the service
// poisoned, where its poison target keeps them readable: a RabbitMQ
// queue or PostgreSQL's hexmill_dead_letters table.
package dlq

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Letter is one dead letter: a poisoned message and why.
type Letter struct {
	// ID names it in the store: the row's id on PostgreSQL, the message
	// ID on RabbitMQ.
	ID        string            `json:"id"`
	Handler   string            `json:"handler"`
	Topic     string            `json:"topic"`
	Transport string            `json:"transport"`
	Reason    string            `json:"reason"`
	MessageID string            `json:"message_id"`
	Attempts  int               `json:"attempts"`
	First     time.Time         `json:"first_failure"`
	Last      time.Time         `json:"last_failure"`
	Size      int               `json:"size"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	Payload   []byte            `json:"payload,omitempty"`
}

// Filter selects dead letters. Its zero value selects every one: the
// commands that change the store refuse it unless All is set.
type Filter struct {
	IDs     []string
	Handler string
	// Reason matches a part of the reason, ignoring case.
	Reason string
	// OlderThan and NewerThan compare the age of the last failure.
	OlderThan, NewerThan time.Duration
	All                  bool
	// Max bounds what one command reads (DefaultMax when 0): on RabbitMQ
	// the messages it takes from the queue, selected or not; on
	// PostgreSQL the rows it selects.
	Max int
}

// DefaultMax is the most dead letters one command reads unless --max
// says otherwise.
const DefaultMax = 100000

// max is f's bound on what a command reads.
func (f Filter) max() int {
	if f.Max > 0 {
		return f.Max
	}
	return DefaultMax
}

// maxError is a command stopped at its bound (Filter.Max) with more dead
// letters to read.
type maxError struct {
	max   int
	queue bool // RabbitMQ: the bound counts every message read
}

func (e maxError) Error() string {
	if e.queue {
		return fmt.Sprintf("stopped at --max %d: the poison queue holds more messages than that and the rest were not read; "+
			"raise --max, or shorten the queue by replaying or purging what was read", e.max)
	}
	return fmt.Sprintf("stopped at --max %d: more dead letters than that are selected and the rest were not read; "+
		"narrow the filter, raise --max, or run replay or purge again for the next ones", e.max)
}

// empty reports whether f selects by nothing.
func (f Filter) empty() bool {
	return len(f.IDs) == 0 && f.Handler == "" && f.Reason == "" && f.OlderThan == 0 && f.NewerThan == 0
}

// match reports whether f selects l at now.
func (f Filter) match(l Letter, now time.Time) bool {
	switch {
	case len(f.IDs) > 0 && !slices.Contains(f.IDs, l.ID):
		return false
	case f.Handler != "" && f.Handler != l.Handler:
		return false
	case f.Reason != "" && !strings.Contains(strings.ToLower(l.Reason), strings.ToLower(f.Reason)):
		return false
	case f.OlderThan > 0 && !l.Last.Before(now.Add(-f.OlderThan)):
		return false
	case f.NewerThan > 0 && l.Last.Before(now.Add(-f.NewerThan)):
		return false
	}
	return true
}

// Store keeps dead letters. Each method reads at most f.Max dead letters
// and returns a maxError, after it handled those, when there are more.
// None holds more than a few payloads at a time.
//
// List hands each letter f selects to visit, oldest first, until visit
// returns false.
//
// Replay hands each selected letter to send and removes it from the store
// only once send returned nil, which it does once the letter's republish
// was confirmed: a crash loses nothing, and may leave a letter both
// replayed and still in the store (replay is at least once). It stops at
// the first failure, which it returns with the count replayed before it.
type Store interface {
	List(ctx context.Context, f Filter, visit func(Letter) bool) error
	Replay(ctx context.Context, f Filter, send func(context.Context, Letter) error) (int, error)
	Purge(ctx context.Context, f Filter) (int, error)
	Close() error
}
