package config

import (
	"slices"

	"github.com/hexmill/hexmill/adapters/transport"
)

// Warnings are the settings in effect that weaken security on purpose
// (allow_plaintext, insecure_skip_verify), each with its full path: those
// of the used transports' sections (transport.Warner) and of the postgres
// section. The runtime logs each at WARN on every start.
func (c Config) Warnings() []transport.Warning {
	var out []transport.Warning
	add := func(path string, ws []transport.Warning) {
		for _, w := range ws {
			out = append(out, transport.Warning{Setting: join(path, w.Setting), Risk: w.Risk})
		}
	}
	used := c.UsedTransports()
	for _, s := range c.sections {
		if s.Transport != "" && !slices.Contains(used, s.Transport) {
			continue
		}
		if w, ok := s.Value.(transport.Warner); ok {
			add(s.Path, w.Warnings())
		}
	}
	if c.Postgres.Enabled() {
		add("postgres", c.Postgres.Config.Warnings())
	}
	return out
}
