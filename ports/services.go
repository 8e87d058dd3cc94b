package ports

import (
	"context"
	"time"
)

// Clock tells the time; tests give a fixed one.
type Clock interface {
	Now() time.Time
}

// DeviceStatus is the last known connectivity of a device.
type DeviceStatus struct {
	DeviceID string
	Online   bool
	// Since is when the device reported the status (its own clock, not ours).
	Since time.Time
}

// DeviceStore keeps the last known status of each device.
//
// SaveIfNewer stores s unless a status at least as recent is stored
// already; it reports whether it stored s, so that a handler can tell a
// change from a redelivery or a late, reordered message.
type DeviceStore interface {
	Get(ctx context.Context, deviceID string) (DeviceStatus, bool, error)
	SaveIfNewer(ctx context.Context, s DeviceStatus) (saved bool, err error)
}
