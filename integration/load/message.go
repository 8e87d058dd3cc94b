package load

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Metric is the reading every generated message carries: {"seq": n}. The
// service under test must be configured with domain.thresholds.seq = -1 so
// that every n >= 0 raises an alert.
const Metric = "seq"

// NewRunID returns a fresh random run ID (8 hex digits). Device IDs, client
// IDs and message IDs of a run all carry it, so runs sharing brokers and a
// sink do not mix.
func NewRunID() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(fmt.Sprintf("load: random run ID: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// DeviceID is the device_id of the k-th device of a run over MQTT and
// RabbitMQ: "load-{runID}-{k}".
func DeviceID(runID string, k int) string {
	return "load-" + runID + "-" + strconv.Itoa(k)
}

// AliyunDevice is the product key and device name of the k-th device of a
// run over AMQP 1.0 (Aliyun push format): product key "load-{runID}",
// device name "{k}". hexmill's Aliyun translation names the device
// "{productKey}.{deviceName}", so the alerts carry device_id
// "load-{runID}.{k}".
func AliyunDevice(runID string, k int) (productKey, deviceName string) {
	return "load-" + runID, strconv.Itoa(k)
}

// belongsTo reports whether an alert's device is one of the run's devices,
// in either naming (DeviceID or AliyunDevice).
func belongsTo(deviceID, runID string) bool {
	rest, ok := strings.CutPrefix(deviceID, "load-"+runID)
	return ok && len(rest) > 1 && (rest[0] == '-' || rest[0] == '.')
}

// telemetry is the sample domain's telemetry JSON (domain.Telemetry).
type telemetry struct {
	DeviceID string         `json:"device_id"`
	Readings map[string]int `json:"readings"`
	At       time.Time      `json:"at"`
}

// message is one numbered message on its way out.
type message struct {
	seq    int
	device int
	at     time.Time // stamped on the first attempt, kept on retries
}

// telemetryJSON is the payload sent over MQTT and RabbitMQ.
func telemetryJSON(runID string, m *message) []byte {
	b, _ := json.Marshal(telemetry{
		DeviceID: DeviceID(runID, m.device),
		Readings: map[string]int{Metric: m.seq},
		At:       m.at.UTC(),
	})
	return b
}

// Application properties of an Aliyun server-side subscription push.
const (
	propTopic        = "topic"
	propMessageID    = "messageId"
	propGenerateTime = "generateTime"
)

// alinkPost is an Alink thing property post as a device sends it.
type alinkPost struct {
	ID      string         `json:"id"`
	Version string         `json:"version"`
	Params  map[string]int `json:"params"`
	Method  string         `json:"method"`
}

// aliyunPush is the body and application properties of message m in
// Aliyun's server-side subscription push format: topic
// /{productKey}/{deviceName}/thing/event/property/post, messageId
// "{runID}-{seq}" (the same on a retry, as Aliyun's redeliveries), and
// generateTime in epoch milliseconds, which hexmill's translation takes as
// the telemetry's at (the body carries no time).
func aliyunPush(runID string, m *message) (body []byte, props map[string]any) {
	pk, dn := AliyunDevice(runID, m.device)
	body, _ = json.Marshal(alinkPost{
		ID:      strconv.Itoa(m.seq),
		Version: "1.0",
		Params:  map[string]int{Metric: m.seq},
		Method:  "thing.event.property.post",
	})
	props = map[string]any{
		propTopic:        "/" + pk + "/" + dn + "/thing/event/property/post",
		propMessageID:    messageID(runID, m.seq),
		propGenerateTime: m.at.UnixMilli(),
	}
	return body, props
}

func messageID(runID string, seq int) string {
	return runID + "-" + strconv.Itoa(seq)
}

// alert is the sample domain's AlertRaised JSON (domain.AlertRaised).
type alert struct {
	DeviceID string    `json:"device_id"`
	Metric   string    `json:"metric"`
	Value    *float64  `json:"value"`
	At       time.Time `json:"at"`
}

// maxSeq bounds the sequence numbers the checker accepts, so that a stray
// alert cannot make it allocate without bound.
const maxSeq = 1 << 24

var errNotOurs = errors.New("not an alert of this run")

// parseAlert returns the sequence number and send time of an AlertRaised of
// run runID; errNotOurs for an alert of another run or metric.
func parseAlert(body []byte, runID string) (seq int, at time.Time, err error) {
	var a alert
	if err := json.Unmarshal(body, &a); err != nil {
		return 0, time.Time{}, fmt.Errorf("alert: %w", err)
	}
	if a.Metric != Metric || !belongsTo(a.DeviceID, runID) {
		return 0, time.Time{}, errNotOurs
	}
	if a.Value == nil {
		return 0, time.Time{}, errors.New("alert: no value")
	}
	v := *a.Value
	if v < 0 || v >= maxSeq || v != math.Trunc(v) {
		return 0, time.Time{}, fmt.Errorf("alert: value %v is not a sequence number", v)
	}
	if a.At.IsZero() {
		return 0, time.Time{}, errors.New("alert: no at")
	}
	return int(v), a.At, nil
}
