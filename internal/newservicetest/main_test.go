package newservicetest

import (
	"os"
	"testing"

	"github.com/hexmill/hexmill/integration"
)

func TestMain(m *testing.M) { os.Exit(integration.WithBrokers(m).Run()) }
