package mqtt_test

import (
	"os"
	"testing"

	"github.com/hexmill/hexmill/integration"
)

// TestMain removes the broker containers the tests started, if any.
func TestMain(m *testing.M) { os.Exit(integration.WithBrokers(m).Run()) }
