package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/domain"
)

// deviceStoreComponent names the device store's migrations in
// schema_migrations.
const deviceStoreComponent = "devices"

//go:embed migrations/*.sql
var deviceStoreFiles embed.FS

// deviceStore provides the domain's DeviceStore: on PostgreSQL when the
// configuration has the postgres section, in memory otherwise. Its tables
// are migrations/, applied at start when PostgreSQL is on.
func deviceStore() fx.Option {
	sub, err := fs.Sub(deviceStoreFiles, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists: a build error otherwise
	}
	return fx.Options(
		app.AsMigrations(deviceStoreComponent, sub),
		fx.Provide(newDeviceStore),
	)
}

type deviceStoreParams struct {
	fx.In
	Config config.Config
	DB     *postgres.DB `optional:"true"` // nil: PostgreSQL is off
}

// newDeviceStore chooses the store. On PostgreSQL the status handler's
// binding must be idempotent: its transaction is what makes the status,
// the handled message and the event commit together, and what holds a
// device while one replica handles it.
func newDeviceStore(p deviceStoreParams) (domain.DeviceStore, error) {
	if p.DB == nil {
		return domain.NewMemoryDeviceStore(), nil
	}
	if !p.Config.Handlers[domain.DeviceStatusHandlerName].Idempotent {
		return nil, p.Config.FieldError("handlers."+domain.DeviceStatusHandlerName+".idempotent",
			"the device store is on PostgreSQL, so the binding must be idempotent: set it to true")
	}
	return &postgresDeviceStore{db: p.DB}, nil
}

// postgresDeviceStore is domain.DeviceStore on PostgreSQL (the table
// device_status), in the handler's transaction when there is one. Times
// are kept to the microsecond, PostgreSQL's precision.
type postgresDeviceStore struct {
	db *postgres.DB
}

var _ domain.DeviceStore = (*postgresDeviceStore)(nil)

const (
	selectStatus          = `SELECT online, since FROM device_status WHERE device_id = $1`
	selectStatusForUpdate = selectStatus + ` FOR UPDATE`
	// lockDevice holds a device that has no row yet until the transaction
	// ends (the two-key advisory locks, apart from the framework's).
	lockDevice = `SELECT pg_advisory_xact_lock(hashtext('device_status'), hashtext($1))`
	// saveIfNewer writes the status unless the stored one is at least as
	// recent; it changes one row when it wrote.
	saveIfNewer = `
INSERT INTO device_status AS d (device_id, online, since) VALUES ($1, $2, $3)
ON CONFLICT (device_id) DO UPDATE SET online = excluded.online, since = excluded.since, updated_at = now()
WHERE d.since < excluded.since`
)

// Get implements domain.DeviceStore. In a transaction it locks the
// device's row; a device with no row yet is locked by its key, and read
// again once locked, so that a first report committed meanwhile by
// another replica is seen.
func (s *postgresDeviceStore) Get(ctx context.Context, deviceID string) (domain.DeviceStatus, bool, error) {
	tx, ok := postgres.TxFrom(ctx)
	if !ok {
		return scanStatus(deviceID, s.db.Pool().QueryRow(ctx, selectStatus, deviceID))
	}
	st, known, err := scanStatus(deviceID, tx.QueryRow(ctx, selectStatusForUpdate, deviceID))
	if err != nil || known {
		return st, known, err
	}
	if _, err := tx.Exec(ctx, lockDevice, deviceID); err != nil {
		return domain.DeviceStatus{}, false, fmt.Errorf("lock device %s: %w", deviceID, err)
	}
	return scanStatus(deviceID, tx.QueryRow(ctx, selectStatusForUpdate, deviceID))
}

func scanStatus(deviceID string, row pgx.Row) (domain.DeviceStatus, bool, error) {
	st := domain.DeviceStatus{DeviceID: deviceID}
	err := row.Scan(&st.Online, &st.Since)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return domain.DeviceStatus{}, false, nil
	case err != nil:
		return domain.DeviceStatus{}, false, fmt.Errorf("get device %s: %w", deviceID, err)
	}
	return st, true, nil
}

// SaveIfNewer implements domain.DeviceStore.
func (s *postgresDeviceStore) SaveIfNewer(ctx context.Context, st domain.DeviceStatus) (bool, error) {
	tag, err := s.conn(ctx).Exec(ctx, saveIfNewer, st.DeviceID, st.Online, st.Since)
	if err != nil {
		return false, fmt.Errorf("save device %s: %w", st.DeviceID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// querier is what the store uses of a transaction or the pool.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// conn is the transaction ctx carries, else the pool.
func (s *postgresDeviceStore) conn(ctx context.Context) querier {
	if tx, ok := postgres.TxFrom(ctx); ok {
		return tx
	}
	return s.db.Pool()
}
