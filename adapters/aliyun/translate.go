package aliyun

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/ports"
)

// Parsers of Aliyun's message formats into neutral types this package
// owns. A service maps them onto its own domain types in a format of its
// own (see app.AsFormat), so the adapter knows no domain. Malformed input
// is ports.Invalid: no retry fixes it.

// PropertyPost is a device's thing property post: its numeric properties
// at one time.
type PropertyPost struct {
	// DeviceID is productKey.deviceName (see DeviceID).
	DeviceID string
	// Properties holds every numeric property (true/false as 1/0);
	// strings and structures are left out.
	Properties map[string]float64
	// At is the newest property time, else gmtCreate, else the
	// generateTime metadata; zero when none is given.
	At time.Time
}

// StatusChange is a device going online or offline.
type StatusChange struct {
	// DeviceID is productKey.deviceName (see DeviceID).
	DeviceID string
	Online   bool
	// At is when the status changed, in UTC.
	At time.Time
}

// alinkProperty is a property post: Alink's device-side form
// ({"id","version","params":{..},"method":"thing.event.property.post"})
// or the form server-side subscription forwards
// ({"productKey","deviceName","gmtCreate","items":{..}}). A property is a
// plain value or {"value":..,"time":epochMillis}.
type alinkProperty struct {
	ID         string                     `json:"id"`
	Method     string                     `json:"method"`
	Params     map[string]json.RawMessage `json:"params"`
	Items      map[string]json.RawMessage `json:"items"`
	ProductKey string                     `json:"productKey"`
	DeviceName string                     `json:"deviceName"`
	GmtCreate  int64                      `json:"gmtCreate"`
}

type timedValue struct {
	Value json.RawMessage `json:"value"`
	Time  int64           `json:"time"`
}

// ParsePropertyPost reads an Alink thing property post from msg: the
// device from the payload or, failing that, from the topic's metadata.
func ParsePropertyPost(msg *message.Message) (PropertyPost, error) {
	var p alinkProperty
	if err := json.Unmarshal(msg.Payload, &p); err != nil {
		return PropertyPost{}, ports.Invalid(fmt.Errorf("alink property post: %w", err))
	}
	if p.Method != "" && p.Method != "thing.event.property.post" {
		return PropertyPost{}, ports.Invalid(fmt.Errorf("alink property post: method %q is not thing.event.property.post", p.Method))
	}
	props := p.Params
	if props == nil {
		props = p.Items
	}
	if len(props) == 0 {
		return PropertyPost{}, ports.Invalid(errors.New("alink property post: neither params nor items holds a property"))
	}
	t := PropertyPost{Properties: map[string]float64{}, DeviceID: deviceOf(msg, p.ProductKey, p.DeviceName)}
	var newest int64
	names := make([]string, 0, len(props))
	for name := range props {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		raw := bytes.TrimSpace(props[name])
		if len(raw) > 0 && raw[0] == '{' {
			var tv timedValue
			if err := json.Unmarshal(raw, &tv); err == nil && tv.Value != nil {
				raw = tv.Value
				newest = max(newest, tv.Time)
			}
		}
		if v, ok := number(raw); ok {
			t.Properties[name] = v
		}
	}
	if len(t.Properties) == 0 {
		return PropertyPost{}, ports.Invalid(fmt.Errorf("alink property post: no numeric property among %v", names))
	}
	switch {
	case newest > 0:
		t.At = time.UnixMilli(newest).UTC()
	case p.GmtCreate > 0:
		t.At = time.UnixMilli(p.GmtCreate).UTC()
	default:
		if ms, err := strconv.ParseInt(msg.Metadata.Get(MetadataGenerateTime), 10, 64); err == nil && ms > 0 {
			t.At = time.UnixMilli(ms).UTC()
		}
	}
	if t.DeviceID == "" {
		return PropertyPost{}, ports.Invalid(errors.New("alink property post: no productKey/deviceName in the payload or the topic"))
	}
	return t, nil
}

// number reads a JSON number or boolean.
func number(raw json.RawMessage) (float64, bool) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, false
	}
	switch v := v.(type) {
	case float64:
		return v, true
	case bool:
		if v {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// aliyunStatus is Aliyun's device status message
// (topic /as/mqtt/status/{productKey}/{deviceName}).
type aliyunStatus struct {
	Status     string `json:"status"`
	ProductKey string `json:"productKey"`
	DeviceName string `json:"deviceName"`
	// UTCTime is the time of the change, e.g. 2018-08-31T07:32:28.205Z;
	// Time is the same in UTC+8 without zone, e.g. 2018-08-31 15:32:28.205.
	UTCTime string `json:"utcTime"`
	Time    string `json:"time"`
}

var chinaTime = time.FixedZone("UTC+8", 8*3600)

// ParseStatusChange reads an Aliyun device status message from msg: the
// device as productKey.deviceName (from the payload, else the topic), the
// time from utcTime, else time (which Aliyun gives in UTC+8).
func ParseStatusChange(msg *message.Message) (StatusChange, error) {
	var s aliyunStatus
	if err := json.Unmarshal(msg.Payload, &s); err != nil {
		return StatusChange{}, ports.Invalid(fmt.Errorf("aliyun device status: %w", err))
	}
	if s.Status != "online" && s.Status != "offline" {
		return StatusChange{}, ports.Invalid(fmt.Errorf("aliyun device status: status %q is neither online nor offline", s.Status))
	}
	r := StatusChange{Online: s.Status == "online", DeviceID: deviceOf(msg, s.ProductKey, s.DeviceName)}
	if r.DeviceID == "" {
		return StatusChange{}, ports.Invalid(errors.New("aliyun device status: no productKey/deviceName in the payload or the topic"))
	}
	var err error
	switch {
	case s.UTCTime != "":
		r.At, err = time.Parse(time.RFC3339Nano, s.UTCTime)
	case s.Time != "":
		r.At, err = time.ParseInLocation("2006-01-02 15:04:05.999", s.Time, chinaTime)
	default:
		err = errors.New("neither utcTime nor time is set")
	}
	if err != nil {
		return StatusChange{}, ports.Invalid(fmt.Errorf("aliyun device status: time: %w", err))
	}
	r.At = r.At.UTC()
	return r, nil
}

// deviceOf is the device ID from the payload's product key and device
// name, else from the message's metadata (parsed from the topic).
func deviceOf(msg *message.Message, productKey, deviceName string) string {
	if id := DeviceID(productKey, deviceName); id != "" {
		return id
	}
	return DeviceID(msg.Metadata.Get(MetadataProductKey), msg.Metadata.Get(MetadataDeviceName))
}
