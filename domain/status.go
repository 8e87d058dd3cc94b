package domain

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hexmill/hexmill/ports"
)

// DeviceStatusHandlerName is the device status handler's binding key.
const DeviceStatusHandlerName = "device-status"

// StatusReport is a device's connectivity report.
type StatusReport struct {
	DeviceID string    `json:"device_id,omitempty"`
	Status   string    `json:"status"` // online or offline
	At       time.Time `json:"at"`
}

// DeviceStatusHandler keeps each device's last status and publishes
// DeviceStatusChanged when it changes. Redeliveries and reports older than
// the stored one change nothing: the sample binds it with order_by
// "{device_id}", so one device's reports arrive in order, but a redelivery
// after a crash comes again, late, and the timestamp check is its guard.
//
// The device is the one its topic names (the device_id attribute, from the
// binding's topic_params), which broker ACLs let only that device publish
// to; a payload device_id that contradicts it is refused (ports.Invalid),
// so that no device can report for another. A report timed more than
// Config.ClockSkew ahead of the service's clock is refused too: stored, it
// would freeze its device's status until that time.
//
// Bound idempotently on PostgreSQL (handlers.device-status.idempotent),
// the handler runs in a transaction (ports.TxFrom): the status, the record
// that the message was handled and the event (written to the outbox)
// commit together or not at all, a duplicate is acknowledged before it
// gets here, and the store holds the device until the commit, so replicas
// handling one device take turns. Without a transaction (the memory
// store), a crash between saving and publishing cannot be undone; the
// handler then publishes first (see Handle).
type DeviceStatusHandler struct {
	cfg       Config
	store     DeviceStore
	publisher ports.Publisher
	clock     ports.Clock
}

// NewDeviceStatusHandler returns the device status handler.
func NewDeviceStatusHandler(cfg Config, store DeviceStore, publisher ports.Publisher, clock ports.Clock) *DeviceStatusHandler {
	return &DeviceStatusHandler{cfg: cfg, store: store, publisher: publisher, clock: clock}
}

// Name implements ports.Handler.
func (h *DeviceStatusHandler) Name() string { return DeviceStatusHandlerName }

// Emits implements ports.Emitter: the service checks its bindings at start.
func (h *DeviceStatusHandler) Emits() []string { return []string{DeviceStatusChangedType} }

// Handle implements ports.Handler.
func (h *DeviceStatusHandler) Handle(ctx context.Context, msg ports.Message) error {
	var r StatusReport
	if err := ports.DecodeJSONStrict(msg.Payload, &r); err != nil {
		return err
	}
	deviceID, err := deviceOf(r.DeviceID, msg)
	if err != nil {
		return ports.Invalid(fmt.Errorf("device status: %w", err))
	}
	r.DeviceID = deviceID
	online, err := r.validate(h.clock.Now().Add(h.cfg.clockSkew()))
	if err != nil {
		return ports.Invalid(err)
	}
	prev, known, err := h.store.Get(ctx, r.DeviceID)
	if err != nil {
		return fmt.Errorf("device status: %w", err)
	}
	if known && !r.At.After(prev.Since) {
		return nil // a redelivery, or a report overtaken by a newer one
	}
	status := DeviceStatus{DeviceID: r.DeviceID, Online: online, Since: r.At}
	changed := !known || prev.Online != online
	if _, inTx := ports.TxFrom(ctx); inTx {
		// Save, then publish: both commit together, and the device's row
		// is written before its event takes its place in the outbox (the
		// outbox's order is the order of its rows).
		if err := h.save(ctx, status); err != nil {
			return err
		}
		return h.publishIf(ctx, changed, status)
	}
	// No transaction: publish before saving, so that a crash in between
	// publishes the change again on redelivery (a duplicate) rather than
	// never (a loss).
	if err := h.publishIf(ctx, changed, status); err != nil {
		return err
	}
	return h.save(ctx, status)
}

// publishIf publishes DeviceStatusChanged for s when its status changed.
func (h *DeviceStatusHandler) publishIf(ctx context.Context, changed bool, s DeviceStatus) error {
	if !changed {
		return nil
	}
	return h.publisher.Publish(ctx, DeviceStatusChanged{DeviceID: s.DeviceID, Online: s.Online, At: s.Since})
}

func (h *DeviceStatusHandler) save(ctx context.Context, s DeviceStatus) error {
	if _, err := h.store.SaveIfNewer(ctx, s); err != nil {
		return fmt.Errorf("device status: %w", err)
	}
	return nil
}

// validate checks a report; latest is the latest time a device's clock
// may tell.
func (r StatusReport) validate(latest time.Time) (online bool, err error) {
	var errs []error
	if r.DeviceID == "" {
		errs = append(errs, errors.New("device_id is missing (in the payload or the topic)"))
	}
	switch r.Status {
	case "online":
		online = true
	case "offline":
	default:
		errs = append(errs, fmt.Errorf("status %q is neither online nor offline", r.Status))
	}
	switch {
	case r.At.IsZero():
		errs = append(errs, errors.New("at is missing: the device's time of the report orders reports"))
	case r.At.After(latest):
		errs = append(errs, fmt.Errorf("at %s is further ahead of the service's clock than clock_skew allows: the device's clock is wrong", r.At.Format(time.RFC3339)))
	}
	if err := errors.Join(errs...); err != nil {
		return false, fmt.Errorf("device status: %w", err)
	}
	return online, nil
}

// DeviceStatus is the last known connectivity of a device.
type DeviceStatus struct {
	DeviceID string
	Online   bool
	// Since is when the device reported the status (its own clock, not ours).
	Since time.Time
}

// DeviceStore keeps the last known status of each device. It is a driven
// port of the status handler, so it is declared where it is used.
//
// Get returns the stored status. When ctx carries a transaction
// (ports.TxFrom), Get also holds the device, stored or not, until the
// transaction ends, so that two handlers of one device (two replicas)
// take turns and the second sees what the first committed.
//
// SaveIfNewer stores s unless a status at least as recent is stored
// already; it reports whether it stored s, so that a handler can tell a
// change from a redelivery or a late, reordered message. In a
// transaction, it writes in it.
type DeviceStore interface {
	Get(ctx context.Context, deviceID string) (DeviceStatus, bool, error)
	SaveIfNewer(ctx context.Context, s DeviceStatus) (saved bool, err error)
}

// MemoryDeviceStore is a DeviceStore in memory, for one process: the
// sample's when PostgreSQL is off (cmd/hexmill binds the PostgreSQL one
// when it is on). It has no transactions: its changes are immediate.
type MemoryDeviceStore struct {
	mu       sync.Mutex
	statuses map[string]DeviceStatus
}

var _ DeviceStore = (*MemoryDeviceStore)(nil)

// NewMemoryDeviceStore returns an empty store.
func NewMemoryDeviceStore() *MemoryDeviceStore {
	return &MemoryDeviceStore{statuses: map[string]DeviceStatus{}}
}

// Get implements DeviceStore.
func (s *MemoryDeviceStore) Get(_ context.Context, deviceID string) (DeviceStatus, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.statuses[deviceID]
	return st, ok, nil
}

// SaveIfNewer implements DeviceStore.
func (s *MemoryDeviceStore) SaveIfNewer(_ context.Context, st DeviceStatus) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.statuses[st.DeviceID]; ok && !st.Since.After(prev.Since) {
		return false, nil
	}
	s.statuses[st.DeviceID] = st
	return true, nil
}
