package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"modernc.org/sqlite" // registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// sqliteEngine is the SQLite engine: the shared sqlEngine on SQLite's pools,
// plus the WAL checkpointer.
//
// Its write pool has exactly one connection: SQLite allows one writer at a
// time, and River's SQLite driver asks for a single connection to avoid
// SQLITE_BUSY between its own goroutines. SaveEvent's group commit makes
// that one connection enough. Its read pool is query_only, so that Status
// and lookups never queue behind the writer (WAL lets readers run beside
// it).
type sqliteEngine struct {
	sqlEngine
	localLeases
	// ckpt is the background checkpointer's own connection.
	ckpt         *sql.DB
	stopCkpt     context.CancelFunc
	ckptDone     chan struct{}
	restartPages int64
}

var _ engine = (*sqliteEngine)(nil)

// openSQLite opens the write pool, migrates, opens the read pool and the
// checkpointer, and returns River's driver, which runs on the write pool.
func openSQLite(ctx context.Context, cfg Config) (_ *sqliteEngine, _ riverdriver.Driver[*sql.Tx], err error) {
	if isMemoryDSN(cfg.DSN) {
		return nil, nil, fmt.Errorf("%w: in-memory SQLite is not supported (WAL and the read pool need a file); use a path, e.g. in a temporary directory", ErrInvalid)
	}
	d := &dialect{strpos: "instr", indexHints: true}
	e := &sqliteEngine{sqlEngine: sqlEngine{d: d, write: sqlDB{d: d}, read: sqlDB{d: d}}, restartPages: cfg.WALRestartPages}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.close())
		}
	}()

	e.write.DB, err = sql.Open("sqlite", sqliteDSN(cfg.DSN, sqliteParams(cfg, poolWrite)))
	if err != nil {
		return nil, nil, dbError("open", err)
	}
	e.write.stmts = newStmtCache(e.write.DB)
	e.write.SetMaxOpenConns(1)
	e.write.SetMaxIdleConns(1)
	e.write.SetConnMaxLifetime(0)
	e.write.SetConnMaxIdleTime(0)
	// sql.Open connects lazily: connecting now reports a bad path or DSN here.
	if err := e.write.PingContext(ctx); err != nil {
		return nil, nil, dbError("open", err)
	}
	if err := migrateSQLite(ctx, e.write.DB, cfg.Now); err != nil {
		return nil, nil, err
	}
	driver := riversqlite.New(e.write.DB)
	if err := migrateRiver(ctx, cfg.Logger, driver); err != nil {
		return nil, nil, err
	}

	// Opened after the migrations, so the file is already in WAL mode.
	e.read.DB, err = sql.Open("sqlite", sqliteDSN(cfg.DSN, sqliteParams(cfg, poolRead)))
	if err != nil {
		return nil, nil, dbError("open read pool", err)
	}
	e.read.stmts = newStmtCache(e.read.DB)
	e.read.SetMaxOpenConns(cfg.ReadConns)
	e.read.SetMaxIdleConns(cfg.ReadConns)
	if err := e.read.PingContext(ctx); err != nil {
		return nil, nil, dbError("open read pool", err)
	}

	e.ckpt, err = sql.Open("sqlite", sqliteDSN(cfg.DSN, sqliteParams(cfg, poolCheckpoint)))
	if err != nil {
		return nil, nil, dbError("open checkpointer", err)
	}
	e.ckpt.SetMaxOpenConns(1)
	if err := e.ckpt.PingContext(ctx); err != nil {
		return nil, nil, dbError("open checkpointer", err)
	}
	ckptCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	e.stopCkpt, e.ckptDone = stop, make(chan struct{})
	go e.checkpointLoop(ckptCtx, cfg.CheckpointInterval, cfg.Logger)

	return e, driver, nil
}

// isMemoryDSN reports whether dsn names an in-memory database.
func isMemoryDSN(dsn string) bool {
	return dsn == ":memory:" || strings.HasPrefix(dsn, "file::memory:") ||
		strings.Contains(dsn, "mode=memory") || strings.Contains(dsn, "vfs=memdb")
}

// Pools of the SQLite engine, each with its own DSN parameters.
type sqlitePool int

const (
	poolWrite sqlitePool = iota
	poolRead
	poolCheckpoint
)

// sqliteParams are the DSN parameters of a pool. modernc.org/sqlite applies
// them to every connection it opens, so a replaced connection (River closes
// one whose transaction was cancelled) is configured like the first.
func sqliteParams(cfg Config, pool sqlitePool) url.Values {
	v := url.Values{}
	// Wait for a lock held by another connection or process (a checkpoint, a
	// second process, the sqlite3 shell) instead of failing at once with
	// SQLITE_BUSY.
	v.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", cfg.BusyTimeout.Milliseconds()))
	switch pool {
	case poolRead:
		// Everything written goes through the single write connection; a
		// write on the read pool would be a bug, so make it fail.
		v.Add("_pragma", "query_only(1)")
		return v
	case poolCheckpoint:
		// A checkpoint fsyncs the WAL before copying it and the database
		// file after, so that the WAL may be reused safely.
		v.Add("_pragma", "synchronous(FULL)")
		return v
	}
	// SQLite leaves REFERENCES unenforced unless each connection asks.
	v.Add("_pragma", "foreign_keys(1)")
	// WAL: readers never block the writer nor wait for it, and a commit is
	// one sequential append to the log plus one fsync.
	v.Add("_pragma", "journal_mode(WAL)")
	// FULL fsyncs the WAL at every commit. The 200 we answer WeCom means
	// "durable", and NORMAL may lose the last commits on power loss. Group
	// commit pays that fsync once per batch, not once per event.
	v.Add("_pragma", "synchronous(FULL)")
	// No checkpoint inside a commit: checkpointLoop does them beside the
	// writer. SQLite's default runs one in whichever commit crosses 1000 WAL
	// pages, and on a slow disk that held a whole batch of callers for
	// hundreds of milliseconds.
	v.Add("_pragma", "wal_autocheckpoint(0)")
	// Shrink the WAL file back to 64 MiB when it restarts, so one burst
	// does not leave a huge file behind.
	v.Add("_pragma", "journal_size_limit(67108864)")
	// BEGIN IMMEDIATE takes the write lock when a transaction starts, so a
	// wait for another process is covered by busy_timeout. A deferred
	// transaction that upgrades later gets SQLITE_BUSY at once instead.
	v.Set("_txlock", "immediate")
	return v
}

// checkpointLoop copies the WAL into the database file every interval, in
// two steps. The bulk is copied on the checkpointer's own connection, beside
// the writer and without blocking it. That alone does not keep the WAL
// small under load: SQLite restarts the WAL from its beginning only at a
// write transaction that finds every frame copied, and commits keep landing
// while the bulk is copied. So a short tail checkpoint follows on the write
// connection itself: as the pool's only connection, it excludes every commit
// while it copies the few frames that arrived meanwhile, and the next write
// transaction restarts the WAL.
func (e *sqliteEngine) checkpointLoop(ctx context.Context, interval time.Duration, logger *slog.Logger) {
	defer close(e.ckptDone)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		frames, err := e.checkpointOnce(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.WarnContext(ctx, "store: WAL checkpoint failed", "err", err)
		case frames > e.restartPages:
			// Something (a long read, another process) keeps the WAL from
			// restarting; say so before the disk fills up.
			logger.WarnContext(ctx, "store: WAL is not restarting", "frames", frames)
		}
	}
}

// checkpointOnce runs the bulk and the tail checkpoint, and returns the
// number of frames in the WAL before its restart.
func (e *sqliteEngine) checkpointOnce(ctx context.Context) (int64, error) {
	frames, err := checkpoint(ctx, e.ckpt)
	if err != nil || frames == 0 {
		return frames, err
	}
	return checkpoint(ctx, e.write.DB)
}

// checkpoint runs a PASSIVE checkpoint on db and returns the number of
// frames in the WAL.
func checkpoint(ctx context.Context, db *sql.DB) (int64, error) {
	var busy, frames, copied int64
	err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
	if err != nil {
		return 0, dbError("checkpoint", err)
	}
	return frames, nil
}

// sqliteDSN appends params to dsn. For a plain path modernc.org/sqlite
// strips the query before opening; a "file:" URI keeps it, and SQLite
// ignores the parameters it does not know.
func sqliteDSN(dsn string, params url.Values) string {
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + params.Encode()
}

// sqliteErrorKind classifies a SQLite error for dbError: ErrConflict,
// errBusy, or nil for any other error.
func sqliteErrorKind(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return nil
	}
	// Codes are extended (e.g. SQLITE_CONSTRAINT_UNIQUE); the low byte is
	// the primary code.
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_CONSTRAINT:
		return ErrConflict
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return errBusy
	}
	return nil
}

// migrateSQLite applies the embedded migrations not yet recorded in
// schema_migrations, in order, each in its own transaction.
func migrateSQLite(ctx context.Context, db *sql.DB, now func() time.Time) error {
	const create = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version     INTEGER PRIMARY KEY,
		name        TEXT    NOT NULL,
		applied_at  INTEGER NOT NULL
	)`
	if _, err := db.ExecContext(ctx, create); err != nil {
		return dbError("create schema_migrations", err)
	}
	migs, err := readMigrations(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		return err
	}
	for _, m := range migs {
		if err := applyMigration(ctx, sqlDB{DB: db, d: &dialect{}}, m, now()); err != nil {
			return err
		}
	}
	return nil
}

// resumeOrphanedJobs implements engine. One process serves a SQLite file
// (the single writer connection is its lock on the work), so at start any
// job still marked running was being worked by a process that died. River's
// rescuer would wait RescueStuckJobsAfter; the jobs are idempotent, so they
// run again now. This writes River's table directly: River has no API to
// release a running job.
func (e *sqliteEngine) resumeOrphanedJobs(ctx context.Context) (int64, error) {
	res, err := e.write.ExecContext(ctx, `UPDATE river_job SET state = 'available' WHERE state = 'running'`)
	if err != nil {
		return 0, dbError("resume running jobs", err)
	}
	n, err := res.RowsAffected()
	return n, dbError("resume running jobs", err)
}

// close implements engine. The checkpointer and the read pool go first so
// that the write connection, closing last, can checkpoint the whole WAL into
// the database file and remove it.
func (e *sqliteEngine) close() error {
	var errs []error
	if e.stopCkpt != nil {
		e.stopCkpt()
		<-e.ckptDone
	}
	if e.ckpt != nil {
		errs = append(errs, e.ckpt.Close())
	}
	if e.read.DB != nil {
		errs = append(errs, e.read.Close())
	}
	if e.write.DB != nil {
		errs = append(errs, e.write.Close())
	}
	return errors.Join(errs...)
}

// sharedToken implements engine: one process owns a SQLite file, so there
// is nobody to share with, and holding the one write connection during a
// network call would stall every callback.
func (e *sqliteEngine) sharedToken(ctx context.Context, _, _ string, _ time.Time, fetch func(context.Context) (Token, error)) (Token, error) {
	return fetch(ctx)
}
