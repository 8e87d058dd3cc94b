package main

import (
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/aliyun"
	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/domain"
)

// name is the service's name: its environment prefix (HEXMILL_), client
// IDs, connection names, metric namespace. `make rename` changes it.
const name = "hexmill"

// service is this service: its handlers, their default bindings, its
// configuration sections and formats. It is the service's own wiring; the
// framework (app/) never imports it.
func service() app.Service {
	return app.Service{
		Name:     name,
		Defaults: defaults,
		Options: []fx.Option{
			// The handlers: one line each.
			app.AsHandler(domain.NewTelemetryHandler),
			app.AsHandler(domain.NewDeviceStatusHandler),

			// What the handlers need.
			app.AsConfig("domain", domain.DefaultConfig),
			deviceStore(), // PostgreSQL when configured, else memory

			// Aliyun's formats, mapped onto the domain's types.
			app.AsFormat("alink-property", alinkPropertyToTelemetry),
			app.AsFormat("aliyun-status", aliyunStatusToReport),

			demo,
		},
	}
}

// defaults binds the sample's handlers and events to the in-memory
// transport, so that a fresh checkout runs with no broker.
func defaults(c *config.Config) {
	c.Handlers[domain.TelemetryHandlerName] = config.Binding{Transport: config.TransportMemory, Topic: "devices.telemetry", Group: name}
	// Unordered: the memory demo's status topic carries no device in its
	// name (no topic_params) for order_by to key on; the deployed sample
	// orders by "{device_id}" (deploy/hexmill.compose.yaml).
	c.Handlers[domain.DeviceStatusHandlerName] = config.Binding{Transport: config.TransportMemory, Topic: "devices.status", Group: name}
	c.Events[domain.AlertRaisedType] = config.EventBinding{Transport: config.TransportMemory, Topic: "alerts"}
	c.Events[domain.DeviceStatusChangedType] = config.EventBinding{Transport: config.TransportMemory, Topic: "devices.status-changed"}
}

// alinkPropertyToTelemetry maps an Aliyun property post onto the domain's
// telemetry: every numeric property is a reading.
func alinkPropertyToTelemetry(msg *message.Message) error {
	p, err := aliyun.ParsePropertyPost(msg)
	if err != nil {
		return err
	}
	return app.ReplaceJSON(msg, domain.Telemetry{DeviceID: p.DeviceID, Readings: p.Properties, At: p.At})
}

// aliyunStatusToReport maps an Aliyun device status message onto the
// domain's status report.
func aliyunStatusToReport(msg *message.Message) error {
	s, err := aliyun.ParseStatusChange(msg)
	if err != nil {
		return err
	}
	status := "offline"
	if s.Online {
		status = "online"
	}
	return app.ReplaceJSON(msg, domain.StatusReport{DeviceID: s.DeviceID, Status: status, At: s.At})
}
