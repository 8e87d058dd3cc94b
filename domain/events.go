package domain

import (
	"fmt"
	"time"

	"github.com/hexmill/hexmill/ports"
)

// AttrDeviceID is the attribute that carries the device ID: a binding
// takes it from the topic (topic_params) or the transport sets it from the
// wire (Aliyun's topic). The topic is what broker ACLs restrict, so where
// it names the device, a payload may repeat the ID but not contradict it
// (see deviceOf).
const AttrDeviceID = "device_id"

// deviceOf is the device a message is about: the topic's (AttrDeviceID),
// which the payload's device ID, if any, must match; else the payload's.
func deviceOf(payloadID string, msg ports.Message) (string, error) {
	topicID := msg.Attributes[AttrDeviceID]
	switch {
	case topicID == "":
		return payloadID, nil
	case payloadID != "" && payloadID != topicID:
		return "", fmt.Errorf("device_id %q in the payload contradicts the topic's %q: a device reports for itself only", payloadID, topicID)
	}
	return topicID, nil
}

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
