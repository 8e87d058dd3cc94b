package domain

import "time"

// AttrDeviceID is the attribute that carries the device ID when the payload
// does not: a binding takes it from the topic (topic_params) or the
// transport's translation sets it.
const AttrDeviceID = "device_id"

// Event types: the keys of their bindings in configuration (events.<type>).
const (
	AlertRaisedType         = "AlertRaised"
	DeviceStatusChangedType = "DeviceStatusChanged"
)

// AlertRaised says a device reported a value above its metric's threshold.
type AlertRaised struct {
	DeviceID  string    `json:"device_id"`
	Metric    string    `json:"metric"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	At        time.Time `json:"at"`
}

// EventType implements ports.Event.
func (AlertRaised) EventType() string { return AlertRaisedType }

// DeviceStatusChanged says a device went online or offline.
type DeviceStatusChanged struct {
	DeviceID string    `json:"device_id"`
	Online   bool      `json:"online"`
	At       time.Time `json:"at"`
}

// EventType implements ports.Event.
func (DeviceStatusChanged) EventType() string { return DeviceStatusChangedType }

// AggregateID implements ports.AggregateEvent: each device's changes are
// relayed from the outbox in the order they were committed.
func (e DeviceStatusChanged) AggregateID() string { return e.DeviceID }
