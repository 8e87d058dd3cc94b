// Command hexmill runs the service: configuration from HEXMILL_* variables
// and the optional YAML file named by HEXMILL_CONFIG, the in-memory
// transport when nothing else is configured.
//
//	hexmill                 run until SIGINT or SIGTERM
//	hexmill -print-config   print the effective configuration, secrets redacted
//	hexmill -check-config   validate the configuration and exit
package main

import (
	"os"

	"github.com/hexmill/hexmill/app"
)

func main() { os.Exit(app.Main(service())) }
