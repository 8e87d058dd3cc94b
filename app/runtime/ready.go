package runtime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// NotReady is a part of the service that is not ready.
type NotReady struct {
	// Part names it, and is all that /readyz shows: intake (starting or
	// stopping), handlers.<name> (its subscription ended),
	// transports.<name>, postgres, events.<type> or poison (failing to
	// publish).
	Part string
	// Err says why, with what the log may hold and an HTTP answer may
	// not: hosts, users, client IDs, driver errors.
	Err error
}

// NotReady lists the parts of the service that are not ready; none while
// every subscription consumes, every transport is connected, PostgreSQL
// (when on) answers, and no event binding (nor the poison target) has
// failed to publish for longer than publish_unready_after.
func (r *Runtime) NotReady() []NotReady {
	r.mu.Lock()
	state, ended := r.state, slices.Clone(r.ended)
	r.mu.Unlock()
	if state != stateRunning {
		return []NotReady{{Part: "intake", Err: errors.New("not consuming")}}
	}
	var out []NotReady
	for _, name := range ended {
		out = append(out, NotReady{Part: "handlers." + name, Err: fmt.Errorf("not consuming: the subscription of [%s] ended", name)})
	}
	for _, name := range slices.Sorted(maps.Keys(r.transports)) {
		if err := r.transports[name].Ready(); err != nil {
			out = append(out, NotReady{Part: "transports." + name, Err: fmt.Errorf("%s: %w", name, err)})
		}
	}
	if r.db != nil {
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		err := r.db.Ready(ctx)
		cancel()
		if err != nil {
			out = append(out, NotReady{Part: "postgres", Err: err})
		}
	}
	if r.cfg.PublishUnreadyAfter > 0 && r.publishers != nil {
		out = append(out, r.publishers.notReady(r.cfg.PublishUnreadyAfter)...)
	}
	return out
}

// notReady lists the routes that have failed to publish for longer than
// after.
func (p *eventPublisher) notReady(after time.Duration) []NotReady {
	now := time.Now()
	routes := []route{p.poisonTo}
	for _, k := range slices.Sorted(maps.Keys(p.routes)) {
		routes = append(routes, p.routes[k])
	}
	var out []NotReady
	for _, r := range routes {
		if d, err := r.failingFor(now); d > after {
			out = append(out, NotReady{Part: r.field, Err: fmt.Errorf("%s has failed to publish for %s: %w", r.field, d.Round(time.Second), err)})
		}
	}
	return out
}
