package app_test

import (
	"errors"
	"strings"
	"testing"

	"go.uber.org/fx"

	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// -check-config builds the graph without connecting: an idempotent
// binding without PostgreSQL fails there, with the fix.
func TestCheckConfigIdempotentWithoutPostgres(t *testing.T) {
	svc := app.Service{Name: "pgcheck", Defaults: func(c *config.Config) {
		c.Handlers["test"] = config.Binding{Transport: config.TransportMemory, Topic: "in", Idempotent: true}
	}, Options: []fx.Option{app.AsHandler(func() ports.Handler { return ports.HandlerFunc{HandlerName: "test"} })}}
	err := app.New(svc, app.Env{"PGCHECK_HTTP_ADDR": "off"}, fx.NopLogger).Err()
	var ce *ports.FieldError
	if !errors.As(err, &ce) {
		t.Fatalf("Err() = %v, want a *ports.FieldError", err)
	}
	for _, want := range []string{"handlers.test.idempotent", "PGCHECK_HANDLERS_TEST_IDEMPOTENT", "needs PostgreSQL", "PGCHECK_POSTGRES_URL"} {
		if !strings.Contains(ce.Error(), want) {
			t.Errorf("%q does not name %q", ce.Error(), want)
		}
	}
}
