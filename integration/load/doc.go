// Package load generates numbered telemetry against a hexmill deployment and
// checks that every message came out the other end.
//
// It stands on its own: it speaks to the brokers with the raw client
// libraries (paho.golang, Azure/go-amqp, amqp091-go), not with hexmill's
// adapters, so a defect in an adapter cannot hide itself.
//
// The pipeline under test is the sample domain's: the service consumes
// telemetry and raises an AlertRaised for every reading above its metric's
// threshold. Configured with domain.thresholds.seq = -1, each telemetry
// message with readings {"seq": n} yields exactly one AlertRaised with
// value n, the same device_id and at = the telemetry's at, published to
// RabbitMQ. The generator numbers its messages 0..Count-1; the checker reads
// the alerts from a sink queue and reports which numbers never came back.
//
// A test or a program uses it in three steps, so that faults can be
// injected while messages flow:
//
//	chk, err := load.NewChecker(ctx, load.CheckConfig{URL: sink, Queue: q, Exchange: "events", RunID: id})
//	defer chk.Close()
//	sent, err := load.Send(ctx, load.SendConfig{Transport: load.MQTT, URL: broker, RunID: id, Count: 10000})
//	report, err := chk.Wait(ctx, sent)
//
// or in one call with Run. The command hexmill-load wraps the same calls.
// It is the framework's end-to-end tests' generator and checker, and not
// internal, so that hexmill-load and the benchmark in the tools module
// (tools/) use the same one.
package load
