package aliyun

import "strings"

// Metadata keys the subscriber sets on every message, beside
// ports.MetadataTopic (Aliyun's topic, e.g.
// /a1b2c3/dev1/thing/event/property/post). Every other application
// property of the AMQP message is copied as it is.
const (
	// MetadataMessageID is Aliyun's message ID (the watermill UUID too):
	// duplicates happen, dedupe on it.
	MetadataMessageID = "messageId"
	// MetadataGenerateTime is when Aliyun generated the message, epoch
	// milliseconds (not for ordering).
	MetadataGenerateTime = "generateTime"
	// MetadataProductKey and MetadataDeviceName are parsed from the topic.
	MetadataProductKey = "productKey"
	MetadataDeviceName = "deviceName"
	// MetadataDeviceID is productKey + "." + deviceName (see DeviceID).
	MetadataDeviceID = "device_id"
)

// DeviceID is the device ID the domain sees for an Aliyun device:
// "{productKey}.{deviceName}", Aliyun's own MQTT client ID convention. A
// product key has no ".", so the first "." splits it again.
func DeviceID(productKey, deviceName string) string {
	if productKey == "" || deviceName == "" {
		return ""
	}
	return productKey + "." + deviceName
}

// ParseTopic returns the product key and device name of an Aliyun topic:
// /{productKey}/{deviceName}/..., /sys/{productKey}/{deviceName}/...,
// /ext/.../{productKey}/{deviceName}/... is not parsed, and
// /as/mqtt/status/{productKey}/{deviceName}.
func ParseTopic(topic string) (productKey, deviceName string, ok bool) {
	// Cut level by level rather than split: it runs for every message and
	// needs at most the first five levels.
	var parts [5]string
	n, rest, more := 0, strings.TrimPrefix(topic, "/"), true
	for ; n < len(parts) && more; n++ {
		parts[n], rest, more = strings.Cut(rest, "/")
	}
	switch {
	case n >= 5 && parts[0] == "as" && parts[1] == "mqtt" && parts[2] == "status":
		productKey, deviceName = parts[3], parts[4]
	case n >= 4 && parts[0] == "sys":
		productKey, deviceName = parts[1], parts[2]
	case n >= 3 && parts[0] != "as" && parts[0] != "ext" && parts[0] != "sys":
		productKey, deviceName = parts[0], parts[1]
	}
	if productKey == "" || deviceName == "" {
		return "", "", false
	}
	return productKey, deviceName, true
}
