package ports

import "context"

// Tx is the database transaction a message is handled in, when its binding
// handles messages idempotently. A store adapter reaches it through the
// context (TxFrom) so that the handler's state changes, the record that the
// message was handled and the events it publishes commit together or not at
// all.
//
// The transaction belongs to the middleware that began it: a handler or
// store must not commit or roll it back, and must not use it after Handle
// returns. Returning an error from Handle rolls it back. A Tx is not safe
// for concurrent use.
type Tx interface {
	// Exec runs a statement that returns no rows and reports how many rows
	// it changed.
	Exec(ctx context.Context, sql string, args ...any) (rowsAffected int64, err error)
	// QueryRow runs a query that returns at most one row; Scan reports
	// ErrNoRows when it returned none.
	QueryRow(ctx context.Context, sql string, args ...any) Row
}

// Row is the result of Tx.QueryRow.
type Row interface {
	// Scan copies the row's columns into dest, or returns ErrNoRows.
	Scan(dest ...any) error
}

// ErrNoRows is what Row.Scan returns (wrapped) when the query returned no
// row; test it with errors.Is.
var ErrNoRows = errNoRows{}

type errNoRows struct{}

func (errNoRows) Error() string { return "no rows in result set" }

// AggregateEvent is an event that belongs to an aggregate, e.g. one device:
// the outbox relays the events of one aggregate in the order they were
// published. Events that do not implement it are ordered with the others by
// commit order only.
type AggregateEvent interface {
	Event
	AggregateID() string
}

type txKey struct{}

// WithTx returns ctx carrying tx; the idempotency middleware sets it.
func WithTx(ctx context.Context, tx Tx) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

// TxFrom returns the transaction ctx carries, if any.
func TxFrom(ctx context.Context) (Tx, bool) {
	tx, ok := ctx.Value(txKey{}).(Tx)
	return tx, ok
}
