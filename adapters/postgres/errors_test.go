package postgres_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hexmill/hexmill/adapters/postgres"
)

func TestUnavailable(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"a handler's own error", errors.New("device d1: no such device"), false},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"admin shutdown", fmt.Errorf("insert: %w", &pgconn.PgError{Code: "57P01"}), true},
		{"cannot connect now (starting)", &pgconn.PgError{Code: "57P03"}, true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, true},
		{"deadlock", &pgconn.PgError{Code: "40P01"}, true},
		{"read-only: a standby, before its promotion", &pgconn.PgError{Code: "25006"}, true},
		{"unique violation: the work is wrong", &pgconn.PgError{Code: "23505"}, false},
		{"syntax error: the code is wrong", &pgconn.PgError{Code: "42601"}, false},
		{"closed connection", fmt.Errorf("query: %w", pgconn.ErrConnClosed), true},
		{"connect error", &pgconn.ConnectError{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := postgres.Unavailable(tc.err); got != tc.want {
				t.Errorf("Unavailable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
