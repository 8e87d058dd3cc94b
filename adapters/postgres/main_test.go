package postgres_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/hexmill/hexmill/integration"
)

// The PostgreSQL container, where one is started, is removed at the end;
// every goroutine the adapter starts has an owner that waits for it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(integration.WithBrokers(m)) }
