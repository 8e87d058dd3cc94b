package config

import "github.com/hexmill/hexmill/ports"

// PoisonPostgres is the poison transport that keeps poisoned messages in
// PostgreSQL's hexmill_dead_letters table instead of on a broker: it
// needs the postgres section, and poison.topic is not used.
const PoisonPostgres = "postgres"

// checkPoisonPostgres validates poison.transport postgres.
func (c Config) checkPoisonPostgres() error {
	if !c.Postgres.Enabled() {
		return &ports.FieldError{Field: "poison.transport", Fix: "postgres keeps dead letters in the service's database, which is off: " +
			"set postgres.url (or postgres.host), or poison to a broker, e.g. rabbitmq with poison.topic a bound queue"}
	}
	return nil
}
