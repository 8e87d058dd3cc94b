package postgres

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Unavailable reports whether err says that the database could not be
// used rather than that the work was wrong: it could not be reached, the
// connection broke, it is shutting down or starting, it has no connection
// slot left, it is a standby that cannot write, or it aborted the
// transaction to resolve a conflict (serialization failure, deadlock).
// Such a message is not at fault: the runtime hands it back to its broker
// instead of poisoning it.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"): // connection exception
			return true
		case strings.HasPrefix(pgErr.Code, "40"): // transaction rollback: serialization failure, deadlock
			return true
		}
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", // admin shutdown, crash shutdown, cannot connect now
			"53300", // too many connections
			// A write on a read-only server: a standby, reached during a
			// failover before its promotion, or through a multi-host URL
			// without target_session_attrs=read-write.
			"25006":
			return true
		}
		return false
	}
	// pgconn's own failures (a write or read on a broken connection, a
	// timeout inside pgconn) all have SafeToRetry, whichever its answer.
	var connErr interface{ SafeToRetry() bool }
	var connectErr *pgconn.ConnectError
	return errors.As(err, &connectErr) || errors.As(err, &connErr) || errors.Is(err, pgconn.ErrConnClosed)
}
