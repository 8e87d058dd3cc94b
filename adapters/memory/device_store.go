package memory

import (
	"context"
	"sync"

	"github.com/hexmill/hexmill/ports"
)

// DeviceStore keeps device statuses in memory.
type DeviceStore struct {
	mu       sync.Mutex
	statuses map[string]ports.DeviceStatus
}

var _ ports.DeviceStore = (*DeviceStore)(nil)

// NewDeviceStore returns an empty store.
func NewDeviceStore() *DeviceStore {
	return &DeviceStore{statuses: map[string]ports.DeviceStatus{}}
}

// Get implements ports.DeviceStore.
func (s *DeviceStore) Get(_ context.Context, deviceID string) (ports.DeviceStatus, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.statuses[deviceID]
	return st, ok, nil
}

// SaveIfNewer implements ports.DeviceStore.
func (s *DeviceStore) SaveIfNewer(_ context.Context, st ports.DeviceStatus) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.statuses[st.DeviceID]; ok && !st.Since.After(prev.Since) {
		return false, nil
	}
	s.statuses[st.DeviceID] = st
	return true, nil
}
