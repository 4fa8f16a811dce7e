package store

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// QueryInt runs a query returning one integer (a count, a pragma) on db's
// pool: for the internal tests and the external ones alike.
func QueryInt(t *testing.T, db *DB, query string) int64 {
	t.Helper()
	var n int64
	require.NoError(t, db.SQL().QueryRowContext(t.Context(), query).Scan(&n))
	return n
}

// SetTestHooks installs hooks that run in the writer goroutine: received
// after a batch arrives (before its requests are taken), taken after they
// are taken (before the transaction). Call it before the first SaveEvent.
func SetTestHooks(db *DB, received, taken func(n int)) {
	db.hooks = testHooks{received: received, taken: taken}
}

// DBError is dbError, for the tests of each engine's error codes.
var DBError = dbError

// ErrBusy is errBusy: a write that waited for a lock longer than
// Config.BusyTimeout.
var ErrBusy = errBusy

// WriteLockKey is the PostgreSQL advisory lock the store's write
// transactions take.
const WriteLockKey = writeLockKey
