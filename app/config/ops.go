package config

import (
	"time"

	"github.com/hexmill/hexmill/adapters/transport/secret"
	"github.com/hexmill/hexmill/ports"
)

// OpsConfig is the ops HTTP server's behaviour (its address is
// http_addr). See docs/security.md.
type OpsConfig struct {
	// Inject turns on POST /inject/{handler}, which publishes a request's
	// body to a handler's in-memory topic. Unset, it is on only in the
	// zero-config demo: no configuration file and every binding on the
	// memory transport.
	Inject *bool `yaml:"inject"`
	// Token, when set, is the bearer token /inject asks for
	// (Authorization: Bearer <token>); other requests get 401.
	Token secret.String `yaml:"token"`
	// ReadTimeout bounds reading a whole request, WriteTimeout writing a
	// response (/metrics included); IdleTimeout closes idle keep-alive
	// connections.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
}

// Defaults of OpsConfig.
const (
	DefaultOpsReadTimeout  = 10 * time.Second
	DefaultOpsWriteTimeout = 30 * time.Second
	DefaultOpsIdleTimeout  = 60 * time.Second
)

// InjectOn reports whether POST /inject/{handler} is served.
func (c OpsConfig) InjectOn() bool { return c.Inject != nil && *c.Inject }

// setDefaults fills the unset settings; demo says whether the service runs
// as the zero-config demo (no configuration file, only memory).
func (c *OpsConfig) setDefaults(demo bool) {
	if c.Inject == nil {
		c.Inject = &demo
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultOpsReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultOpsWriteTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultOpsIdleTimeout
	}
}

// Validate reports the first invalid setting, under ops.
func (c OpsConfig) Validate() error {
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"ops.read_timeout", c.ReadTimeout}, {"ops.write_timeout", c.WriteTimeout}, {"ops.idle_timeout", c.IdleTimeout}} {
		if d.v < 0 {
			return &ports.FieldError{Field: d.field, Fix: "must be a positive duration (0: the default)"}
		}
	}
	return nil
}
