package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"go.uber.org/fx"

	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/ports"
)

// Service is what a service built on the framework says about itself. Its
// main is one line: os.Exit(app.Main(service)).
type Service struct {
	// Name names the service: the default of the service setting (and so
	// of client IDs, connection names, the metric namespace and log
	// lines), and the prefix of its environment variables (FLEET_ for
	// fleet). Two services on one broker need different names.
	Name string
	// Defaults sets the service's defaults on top of the framework's: its
	// handlers' and events' bindings, for example. May be nil.
	Defaults func(*config.Config)
	// Options are the service's fx options: its handlers (AsHandler),
	// formats (AsFormat), middlewares (AsMiddleware), configuration
	// sections (AsConfig), transports (AsTransport), and whatever its
	// handlers need.
	Options []fx.Option
}

// Env is the process environment: variable name -> value.
type Env map[string]string

// OSEnv returns the process's environment.
func OSEnv() Env {
	env := Env{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// stderr is where the service logs.
var stderr io.Writer = os.Stderr

// Exit codes of Main.
const (
	ExitOK     = 0
	ExitFailed = 1 // start or stop failed
	ExitConfig = 2 // the configuration is invalid: nothing was connected
)

// Main runs svc as a command: configuration from the environment and the
// optional YAML file named by <PREFIX>CONFIG, until SIGINT or SIGTERM.
//
//	-print-config   print the effective configuration, secrets redacted
//	-check-config   validate the configuration (bindings, their options,
//	                formats, handlers) and exit; nothing connects
//	dlq ...         list, show, replay or purge dead letters (app/dlq)
//
// Every configuration error, whether found while loading or while the
// graph is built, is one line on stderr and exit status 2.
func Main(svc Service) int {
	flags := flag.NewFlagSet(svc.Name, flag.ContinueOnError)
	printConfig := flags.Bool("print-config", false, "print the effective configuration (secrets redacted) and exit")
	checkConfig := flags.Bool("check-config", false, "validate the configuration and exit; nothing connects")
	if err := flags.Parse(os.Args[1:]); err != nil {
		return ExitConfig
	}
	fail := func(err error) int {
		var fe *ports.FieldError
		if errors.As(err, &fe) && fe.Env != "" {
			fmt.Fprintf(os.Stderr, "%s: %v\n", svc.Name, fe)
			return ExitConfig
		}
		var cfe *config.FileError
		if errors.As(err, &cfe) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", svc.Name, oneLine(cfe))
			return ExitConfig
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", svc.Name, oneLine(err))
		return ExitFailed
	}
	if flags.Arg(0) == "dlq" {
		return runDLQ(svc, flags.Args()[1:], fail)
	}

	var cfg config.Config
	service := New(svc, OSEnv(), fx.Populate(&cfg), fx.NopLogger)
	if err := service.Err(); err != nil {
		return fail(err)
	}
	switch {
	case *printConfig:
		out, err := cfg.YAML()
		if err != nil {
			return fail(fmt.Errorf("print config: %w", err))
		}
		_, _ = os.Stdout.Write(out)
		return ExitOK
	case *checkConfig:
		fmt.Println("configuration ok")
		return ExitOK
	}

	startCtx, cancel := context.WithTimeout(context.Background(), service.StartTimeout())
	defer cancel()
	if err := service.Start(startCtx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: start: %v\n", svc.Name, oneLine(err))
		return ExitFailed
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
	signal.Stop(signals)

	stopCtx, cancelStop := context.WithTimeout(context.Background(), StopTimeout(cfg))
	defer cancelStop()
	if err := service.Stop(stopCtx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: stop: %v\n", svc.Name, oneLine(err))
		return ExitFailed
	}
	return ExitOK
}

// oneLine joins the lines of a multi-line error (fx and errors.Join give
// those).
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}
