package store

// SetTestHooks installs hooks that run in the writer goroutine: received
// after a batch arrives (before its requests are taken), taken after they
// are taken (before the transaction). Call it before the first SaveEvent.
func SetTestHooks(db *DB, received, taken func(n int)) {
	db.hooks = testHooks{received: received, taken: taken}
}
