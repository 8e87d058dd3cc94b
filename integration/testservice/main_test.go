package testservice_test

import (
	"os"
	"testing"

	"github.com/hexmill/hexmill/integration"
)

// The PostgreSQL container, where one is started (no
// HEXMILL_TEST_POSTGRES_URL), is shared by the tests and removed at the
// end.
func TestMain(m *testing.M) { os.Exit(integration.WithBrokers(m).Run()) }
