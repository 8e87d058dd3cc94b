// Command testservice runs the framework's test service (see package
// testservice) until SIGINT or SIGTERM, configured like any service:
// HEXMILL_* variables and the file named by HEXMILL_CONFIG.
package main

import (
	"os"

	"github.com/hexmill/hexmill/app"
	"github.com/hexmill/hexmill/integration/testservice"
)

func main() { os.Exit(app.Main(testservice.Service())) }
