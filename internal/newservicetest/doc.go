// Package newservicetest proves the second way to build on the framework,
// a service module of its own (docs/fork.md): `make new-service` writes a
// module into a temporary directory with its replace pointing at this
// checkout; that module's own `make lint` and `make test` pass against the
// brokers, and its binary, run with its deploy/ configuration, turns a
// device's reading over MQTT into its handler's event on RabbitMQ and
// stops on SIGINT with exit status 0. Bad input to the generator is
// refused with an error naming it.
package newservicetest
