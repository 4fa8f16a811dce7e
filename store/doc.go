// Package store is pendinglink's domain vocabulary and its persistence.
//
// It keeps everything durable in one database: the callback events WeCom
// sends, the fans the brand registers, resolutions of customers to
// pending_ids, the links between them, the webhook outbox, the WeCom quota
// counters, and River's job tables. Because River lives in the same database,
// an event and the job that processes it commit in one transaction: when
// [DB.SaveEvent] returns nil both are on disk, and when it returns an error
// neither was written.
//
// # Opening
//
// [Open] picks the engine from [Config.DSN] (a SQLite file, or PostgreSQL for
// a postgres:// URL), applies the embedded migrations and River's, and builds
// the River client.
// [DB.Start] begins working jobs when [Config.Workers] is set; [DB.Close]
// stops everything in reverse order.
//
// # Group commit
//
// SaveEvent does not run its own transaction. Concurrent calls are handed to
// one writer goroutine that takes everything already waiting (up to
// Config.MaxBatch events), stores it in a single transaction with the jobs,
// commits once and answers every caller. The fsync that makes a 200 durable
// is thus shared by the whole batch, which is what lets a single SQLite file
// take thousands of callbacks per second. No call waits for a batch to fill:
// under load, requests pile up while the previous batch commits.
//
// # SQLite
//
// The write pool has exactly one connection, as River's SQLite driver asks
// (see riversqlite's package doc), and every write goes through it. Reads
// such as [DB.Status] use a separate read-only pool, which WAL mode lets run
// beside the writer. A background checkpointer copies the WAL into the
// database file, so that no commit has to. A consequence of the single
// connection: never call a writing DB method while holding a transaction
// begun on [DB.SQL], since the call would wait for the very connection that
// transaction holds.
//
// # PostgreSQL
//
// Several instances may share one PostgreSQL database. One pool
// ([Config.MaxConns]) serves the store and River, whose driver is
// riverdatabasesql, so transactions are *sql.Tx as on SQLite; River hears of
// new jobs through LISTEN/NOTIFY. The store's write transactions take one
// advisory lock, so they run one at a time across all instances, as on
// SQLite's single connection: the matching rules rely on it. Migrations run
// under another advisory lock, so instances starting together are safe. Jobs
// a dead instance left running are rescued by River after
// [Config.RescueStuckJobsAfter]. docs/ARCHITECTURE.md lists the differences.
package store
