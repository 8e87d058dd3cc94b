package testservice

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/ports"
)

// StatusHandlerName is the device status handler's binding key.
const StatusHandlerName = "device-status"

// StatusComponent names the status store's migrations in
// schema_migrations.
const StatusComponent = "testservice_devices"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// statusOptions are the device status handler and its store: on
// PostgreSQL when the service has a database, in memory otherwise.
func statusOptions() fx.Option {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists: a build error otherwise
	}
	return fx.Options(
		app.AsMigrations(StatusComponent, sub),
		fx.Provide(newStatusStore),
		app.AsHandler(newStatusHandler),
	)
}

// statusReport is a device's connectivity report (the sample's
// domain.StatusReport).
type statusReport struct {
	DeviceID string    `json:"device_id,omitempty"`
	Status   string    `json:"status"` // online or offline
	At       time.Time `json:"at"`
}

// deviceStatusChanged says a device went online or offline.
type deviceStatusChanged struct {
	DeviceID string    `json:"device_id"`
	Online   bool      `json:"online"`
	At       time.Time `json:"at"`
}

func (deviceStatusChanged) EventType() string { return "DeviceStatusChanged" }

// AggregateID makes the outbox relay keep each device's events in order.
func (e deviceStatusChanged) AggregateID() string { return e.DeviceID }

// deviceStatus is a device's last status.
type deviceStatus struct {
	DeviceID string
	Online   bool
	At       time.Time // the report's time, by the device's clock
}

// statusStore keeps each device's last status.
type statusStore interface {
	// Apply stores s unless a status at least as recent is stored for its
	// device. When s changes the device's status (or is its first), it
	// calls changed while it holds the device, and keeps s only if
	// changed returns nil. A report older than the stored one changes
	// nothing and returns nil.
	Apply(ctx context.Context, s deviceStatus, changed func() error) error
}

// newStatusHandler keeps each device's last status and publishes
// DeviceStatusChanged when it changes; duplicates and reports older than
// the stored one change nothing. As the sample's, it refuses a payload
// device_id that contradicts the topic's and a report timed more than
// clock_skew ahead, which would freeze its device's status.
func newStatusHandler(cfg thresholds, store statusStore, pub ports.Publisher, clock ports.Clock) ports.Handler {
	return ports.JSONHandler(StatusHandlerName, func(ctx context.Context, r statusReport, md ports.Metadata) error {
		deviceID, err := deviceOf(r.DeviceID, md)
		if err != nil {
			return ports.Invalid(fmt.Errorf("device status: %w", err))
		}
		r.DeviceID = deviceID
		var errs []error
		if r.DeviceID == "" {
			errs = append(errs, errors.New("device_id is missing (in the payload or the topic)"))
		}
		if r.Status != "online" && r.Status != "offline" {
			errs = append(errs, fmt.Errorf("status %q is neither online nor offline", r.Status))
		}
		switch {
		case r.At.IsZero():
			errs = append(errs, errors.New("at is missing: it orders the reports"))
		case r.At.After(clock.Now().Add(cfg.clockSkew())):
			errs = append(errs, fmt.Errorf("at %s is further ahead of the service's clock than clock_skew allows: the device's clock is wrong", r.At.Format(time.RFC3339)))
		}
		if err := errors.Join(errs...); err != nil {
			return ports.Invalid(fmt.Errorf("device status: %w", err))
		}
		s := deviceStatus{DeviceID: r.DeviceID, Online: r.Status == "online", At: r.At}
		err = store.Apply(ctx, s, func() error {
			// In the handler's transaction (PostgreSQL) the event goes to
			// the outbox and commits with the row written just before.
			return pub.Publish(ctx, deviceStatusChanged{DeviceID: s.DeviceID, Online: s.Online, At: s.At})
		})
		if err != nil {
			return fmt.Errorf("device status: %w", err)
		}
		return nil
	}, ports.Strict(), ports.Emits(deviceStatusChanged{}))
}

type statusStoreParams struct {
	fx.In
	DB *postgres.DB `optional:"true"` // nil: PostgreSQL is off
}

func newStatusStore(p statusStoreParams) statusStore {
	if p.DB == nil {
		return &memoryStatusStore{statuses: map[string]deviceStatus{}}
	}
	return &postgresStatusStore{db: p.DB}
}

// postgresStatusStore keeps the statuses in the table device_status
// (migrations/), written in the handler's transaction when there is one
// (an idempotent binding), else in a transaction of its own.
type postgresStatusStore struct {
	db *postgres.DB
}

// applySQL stores the report unless the stored one is at least as recent,
// in one statement: the upsert locks the device's row (or waits for a
// concurrent insert of it), so the replicas handling one device take
// turns and each sees the status the other committed. It returns a row
// only when it stored the report, with whether the status changed.
const applySQL = `
INSERT INTO device_status AS d (device_id, online, at, changed_at, changes)
VALUES ($1, $2, $3, $3, 1)
ON CONFLICT (device_id) DO UPDATE SET
    online     = excluded.online,
    at         = excluded.at,
    changed_at = CASE WHEN d.online = excluded.online THEN d.changed_at ELSE excluded.at END,
    changes    = d.changes + CASE WHEN d.online = excluded.online THEN 0 ELSE 1 END,
    updated_at = now()
WHERE d.at < excluded.at
RETURNING changed_at = at`

func (s *postgresStatusStore) Apply(ctx context.Context, st deviceStatus, changed func() error) error {
	apply := func(ctx context.Context) error {
		tx, _ := postgres.TxFrom(ctx)
		var isChange bool
		err := tx.QueryRow(ctx, applySQL, st.DeviceID, st.Online, st.At).Scan(&isChange)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil // a report at least as recent is stored
		case err != nil:
			return fmt.Errorf("store %s: %w", st.DeviceID, err)
		case isChange:
			return changed()
		}
		return nil
	}
	if _, ok := postgres.TxFrom(ctx); ok {
		return apply(ctx)
	}
	return s.db.InTx(ctx, apply)
}

// memoryStatusStore keeps the statuses in memory, for one process. It
// holds its lock while changed runs: changes are published one at a time.
type memoryStatusStore struct {
	mu       sync.Mutex
	statuses map[string]deviceStatus
}

func (s *memoryStatusStore) Apply(_ context.Context, st deviceStatus, changed func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, known := s.statuses[st.DeviceID]
	if known && !st.At.After(prev.At) {
		return nil
	}
	if !known || prev.Online != st.Online {
		if err := changed(); err != nil {
			return err
		}
	}
	s.statuses[st.DeviceID] = st
	return nil
}
