package app

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/fx"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/dlq"
	"github.com/hexmill/hexmill/app/runtime"
)

type dlqParams struct {
	fx.In
	Config  config.Config
	Openers []runtime.Opener `group:"transports"`
	DB      *postgres.DB     `optional:"true"`
}

// runDLQ runs "<service> dlq ..." (package app/dlq) with the service's
// configuration, loaded as the service loads it. It connects as
// <service>-dlq, so that its client IDs and connection names are not
// the running service's. fail reports a configuration error as Main does.
func runDLQ(svc Service, args []string, fail func(error) int) int {
	env := OSEnv()
	name := config.EnvPrefix(svc.Name) + "SERVICE"
	if env[name] == "" {
		env[name] = svc.Name
	}
	env[name] += "-dlq"
	var p dlqParams
	service := New(svc, env, fx.Populate(&p), fx.NopLogger)
	if err := service.Err(); err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return dlq.Run(ctx, args, dlq.Env{Config: p.Config, Openers: p.Openers, DB: p.DB, Stdout: os.Stdout, Stderr: os.Stderr})
}
