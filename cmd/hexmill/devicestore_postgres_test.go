package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/memory"
	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/domain"
	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/ports"
)

// pgSchema opens a DB on the test database in a schema of the test's own,
// dropped when the test ends, and returns it with the service
// configuration that uses it.
func pgSchema(t *testing.T) (*postgres.DB, string) {
	t.Helper()
	url := integration.PostgresURL(t)
	schema := fmt.Sprintf("t_sample_devices_%08x", rand.Uint32())
	db := integration.PostgresSchema(t, postgres.Config{URL: url, Schema: schema})
	return db, fmt.Sprintf("postgres:\n  url: %s\n  schema: %s\n  relay:\n    poll_interval: 50ms\n", url, schema)
}

func newSample(t *testing.T, conf string, extra ...fx.Option) *fx.App {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hexmill.yaml")
	if err := os.WriteFile(path, []byte("http_addr: \"off\"\ndemo:\n  enabled: false\n"+conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return app.New(service(), app.Env{"HEXMILL_CONFIG": path}, append(extra, fx.NopLogger)...)
}

// The sample on PostgreSQL: the status handler, bound idempotently, keeps
// the newest status in device_status, ignores a duplicate, an older report
// and the same status again, and publishes each change through the outbox.
func TestSampleStatusOnPostgres(t *testing.T) {
	db, conf := pgSchema(t)
	conf += "handlers:\n  device-status:\n    transport: memory\n    topic: devices.status\n    idempotent: true\n"
	var broker *memory.Transport
	svc := newSample(t, conf, fx.Populate(&broker))
	if err := svc.Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = svc.Stop(context.Background()) }()
	sub, err := broker.Subscriber(memory.SubscriberConfig{Group: "test", Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	events, err := sub.Subscribe(ctx, "devices.status-changed")
	if err != nil {
		t.Fatal(err)
	}

	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	reports := []struct {
		uuid, status string
		at           time.Time
		event        bool
	}{
		{"m1", "online", at(0), true},
		{"m2", "offline", at(3), true},
		{"m2", "offline", at(3), false}, // a duplicate
		{"m3", "online", at(2), false},  // older than the stored one
		{"m4", "offline", at(4), false}, // the same status
		{"m5", "online", at(5), true},
	}
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
			var e domain.DeviceStatusChanged
			if err := json.Unmarshal(m.Payload, &e); err != nil {
				t.Fatal(err)
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
	var (
		online bool
		since  time.Time
	)
	if err := db.Pool().QueryRow(ctx, `SELECT online, since FROM device_status WHERE device_id = 'd1'`).Scan(&online, &since); err != nil {
		t.Fatal(err)
	}
	if !online || !since.Equal(at(5)) {
		t.Errorf("d1 online=%v since %s; want online since %s", online, since, at(5))
	}
}

// PostgreSQL on and the status binding not idempotent: the start is
// refused, naming the setting.
func TestSampleStoreNeedsIdempotentBinding(t *testing.T) {
	_, conf := pgSchema(t)
	err := newSample(t, conf).Err()
	var ce *ports.FieldError
	if !errors.As(err, &ce) || ce.Field != "handlers.device-status.idempotent" || ce.Env != "HEXMILL_HANDLERS_DEVICE_STATUS_IDEMPOTENT" {
		t.Fatalf("error = %v, want a configuration error (exit status 2) naming handlers.device-status.idempotent and its variable", err)
	}
}

// Two transactions handling the first reports of one device at once: the
// second's Get waits until the first committed, and sees its status.
func TestPostgresDeviceStoreHoldsNewDevice(t *testing.T) {
	db, _ := pgSchema(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sub, err := fs.Sub(deviceStoreFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, deviceStoreComponent, sub); err != nil {
		t.Fatal(err)
	}
	store := &postgresDeviceStore{db: db}
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

	firstHolds, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- db.InTx(ctx, func(ctx context.Context) error {
			if _, known, err := store.Get(ctx, "d1"); err != nil || known {
				return fmt.Errorf("first Get: known %v, %v", known, err)
			}
			close(firstHolds)
			<-release
			_, err := store.SaveIfNewer(ctx, domain.DeviceStatus{DeviceID: "d1", Online: true, Since: t0})
			return err
		})
	}()
	<-firstHolds
	second := make(chan domain.DeviceStatus, 1)
	secondErr := make(chan error, 1)
	go func() {
		secondErr <- db.InTx(ctx, func(ctx context.Context) error {
			st, _, err := store.Get(ctx, "d1")
			second <- st
			return err
		})
	}()
	// The second waits on the device's lock: await it in pg_locks.
	for waiting := 0; waiting == 0; {
		if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		select {
		case st := <-second:
			t.Fatalf("second Get returned %+v while the first transaction held the device", st)
		case <-ctx.Done():
			t.Fatal("the second transaction never waited")
		case <-time.After(10 * time.Millisecond): // polling pg_locks
		}
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-secondErr; err != nil {
		t.Fatal(err)
	}
	if st := <-second; !st.Online || !st.Since.Equal(t0) {
		t.Fatalf("second Get = %+v, want the first's status (online since %s)", st, t0)
	}
}
