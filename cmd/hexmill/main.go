// Command hexmill runs the service: configuration from HEXMILL_* variables
// and the optional YAML file named by HEXMILL_CONFIG, the in-memory
// transport when nothing else is configured.
//
//	hexmill                 run until SIGINT or SIGTERM
//	hexmill -print-config   print the effective configuration, secrets redacted
//	hexmill -check-config   validate the configuration and exit
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"gopkg.in/yaml.v3"

	"github.com/hexmill/hexmill/app"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // start or stop failed
	exitConfig = 2 // the configuration is invalid: nothing was connected
)

func main() { os.Exit(run()) }

func run() int {
	printConfig := flag.Bool("print-config", false, "print the effective configuration (secrets redacted) and exit")
	checkConfig := flag.Bool("check-config", false, "validate the configuration and exit")
	flag.Parse()

	cfg, err := app.LoadConfig(os.LookupEnv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hexmill: %v\n", err)
		return exitConfig
	}
	switch {
	case *printConfig:
		out, err := yaml.Marshal(cfg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "hexmill: print config: %v\n", err)
			return exitFailed
		}
		_, _ = os.Stdout.Write(out)
		return exitOK
	case *checkConfig:
		fmt.Println("configuration ok")
		return exitOK
	}

	service := app.New(cfg)
	if err := service.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "hexmill: %v\n", err)
		return exitConfig
	}
	startCtx, cancel := context.WithTimeout(context.Background(), service.StartTimeout())
	defer cancel()
	if err := service.Start(startCtx); err != nil {
		fmt.Fprintf(os.Stderr, "hexmill: start: %v\n", err)
		return exitFailed
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
	signal.Stop(signals)

	stopCtx, cancelStop := context.WithTimeout(context.Background(), service.StopTimeout())
	defer cancelStop()
	if err := service.Stop(stopCtx); err != nil {
		fmt.Fprintf(os.Stderr, "hexmill: stop: %v\n", err)
		return exitFailed
	}
	return exitOK
}
