package testservice_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/integration"
)

type statusChanged struct {
	DeviceID string    `json:"device_id"`
	Online   bool      `json:"online"`
	At       time.Time `json:"at"`
}

// The device status handler in-process, on memory and on PostgreSQL (an
// idempotent binding, events through the outbox): a change publishes, the
// same status again, an older report and a duplicate do not, and on
// PostgreSQL the row holds the newest report and its count of changes.
func TestStatusHandler(t *testing.T) {
	t1 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	at := func(min int) time.Time { return t1.Add(time.Duration(min) * time.Minute) }
	// Reports in the order they are sent; uuid repeats for a duplicate.
	reports := []struct {
		uuid, status string
		at           time.Time
		event        bool // publishes DeviceStatusChanged
	}{
		{"m1", "online", at(0), true},
		{"m2", "offline", at(3), true},
		{"m3", "online", at(2), false},  // older than the stored one
		{"m2", "offline", at(3), false}, // a duplicate
		{"m4", "offline", at(4), false}, // no change
		{"m5", "online", at(5), true},
	}
	for _, backend := range []string{"memory", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			conf := "http_addr: \"off\"\n"
			var db *postgres.DB
			if backend == "postgres" {
				schema := fmt.Sprintf("t_testservice_status_%08x", rand.Uint32())
				url := integration.PostgresURL(t)
				conf += fmt.Sprintf("postgres:\n  url: %s\n  schema: %s\n  relay:\n    poll_interval: 50ms\nhandlers:\n  device-status:\n    transport: memory\n    topic: devices.status\n    idempotent: true\n", url, schema)
				db = integration.PostgresSchema(t, postgres.Config{URL: url, Schema: schema})
			}
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			broker, events := startInProcess(t, ctx, app.Env{"HEXMILL_CONFIG": path}, "devices.status-changed")
			for i, r := range reports {
				in := message.NewMessage(r.uuid, []byte(fmt.Sprintf(`{"device_id":"d1","status":%q,"at":%q}`, r.status, r.at.Format(time.RFC3339))))
				if err := broker.Publish("devices.status", in); err != nil {
					t.Fatal(err)
				}
				if !r.event {
					continue
				}
				select {
				case m := <-events:
					m.Ack()
					var e statusChanged
					if err := json.Unmarshal(m.Payload, &e); err != nil {
						t.Fatalf("event %s: %v", m.Payload, err)
					}
					if e.DeviceID != "d1" || e.Online != (r.status == "online") || !e.At.Equal(r.at) {
						t.Fatalf("report %d: event %+v, want d1 %s at %s", i, e, r.status, r.at)
					}
				case <-ctx.Done():
					t.Fatalf("report %d: no event", i)
				}
			}
			select {
			case m := <-events:
				t.Fatalf("unexpected event %s", m.Payload)
			case <-time.After(500 * time.Millisecond): // an absence cannot be awaited
			}
			if db == nil {
				return
			}
			var (
				online  bool
				last    time.Time
				changes int
				outbox  int
			)
			if err := db.Pool().QueryRow(ctx, `SELECT online, at, changes, (SELECT count(*) FROM hexmill_outbox) FROM device_status WHERE device_id = 'd1'`).Scan(&online, &last, &changes, &outbox); err != nil {
				t.Fatal(err)
			}
			if !online || !last.Equal(at(5)) || changes != 3 || outbox != 0 {
				t.Errorf("row online=%v at=%s changes=%d, outbox %d rows; want online at %s, 3 changes, outbox empty", online, last, changes, outbox, at(5))
			}
		})
	}
}

// As the sample's, the status handler refuses what it cannot trust, on
// memory and on PostgreSQL: a payload device_id that contradicts the
// topic's, and a report from a clock more than clock_skew ahead, which,
// stored, would freeze the device's status. Both are poisoned; the
// device's next, correct, report changes its status.
func TestStatusHandlerRefusesUntrusted(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	for _, backend := range []string{"memory", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			conf := "http_addr: \"off\"\ndomain: {clock_skew: 1m}\npoison: {transport: memory, topic: poison}\n"
			binding := "  device-status: {transport: memory, topic: devices/d1/status, topic_params: \"devices/{device_id}/status\"%s}\n"
			var db *postgres.DB
			if backend == "postgres" {
				schema := fmt.Sprintf("t_testservice_untrusted_%08x", rand.Uint32())
				url := integration.PostgresURL(t)
				conf += fmt.Sprintf("postgres:\n  url: %s\n  schema: %s\n  relay:\n    poll_interval: 50ms\n", url, schema)
				binding = fmt.Sprintf(binding, ", idempotent: true")
				db = integration.PostgresSchema(t, postgres.Config{URL: url, Schema: schema})
			} else {
				binding = fmt.Sprintf(binding, "")
			}
			conf += "handlers:\n" + binding
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			broker, events := startInProcess(t, ctx, app.Env{"HEXMILL_CONFIG": path}, "devices.status-changed")
			psub, err := broker.Subscriber(memory.SubscriberConfig{Group: "test", Concurrency: 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = psub.Close() })
			poison, err := psub.Subscribe(ctx, "poison")
			if err != nil {
				t.Fatal(err)
			}
			send := func(uuid, device, status string, at time.Time) {
				t.Helper()
				in := message.NewMessage(uuid, []byte(fmt.Sprintf(`{"device_id":%q,"status":%q,"at":%q}`, device, status, at.Format(time.RFC3339))))
				if err := broker.Publish("devices/d1/status", in); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range []struct{ uuid, device, reason string }{
				{"m1", "d2", `contradicts the topic's "d1"`},
				{"m2", "d1", "clock_skew"},
			} {
				at := now
				if r.uuid == "m2" {
					at = now.Add(24 * time.Hour)
				}
				send(r.uuid, r.device, "online", at)
				select {
				case m := <-poison:
					m.Ack()
					if reason := m.Metadata.Get("reason_poisoned"); m.UUID != r.uuid || !strings.Contains(reason, r.reason) {
						t.Fatalf("poisoned %s: %q, want %s naming %q", m.UUID, reason, r.uuid, r.reason)
					}
				case m := <-events:
					t.Fatalf("report %s published %s, want it poisoned", r.uuid, m.Payload)
				case <-ctx.Done():
					t.Fatalf("report %s: not poisoned", r.uuid)
				}
			}
			send("m3", "d1", "offline", now)
			select {
			case m := <-events:
				m.Ack()
				var e statusChanged
				if err := json.Unmarshal(m.Payload, &e); err != nil {
					t.Fatal(err)
				}
				if e.DeviceID != "d1" || e.Online || !e.At.Equal(now) {
					t.Fatalf("event %+v, want d1 offline at %s", e, now)
				}
			case <-ctx.Done():
				t.Fatal("the correct report changed nothing: the device's status is frozen")
			}
			if db == nil {
				return
			}
			var n int
			if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM device_status WHERE device_id <> 'd1' OR at > now() + interval '1 minute'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("%d refused reports stored", n)
			}
		})
	}
}
