package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"modernc.org/sqlite" // registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/pendinglink/pendinglink/quota"
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// sqliteEngine is the SQLite implementation of engine. It owns all SQLite
// SQL.
type sqliteEngine struct {
	// write has exactly one connection: SQLite allows one writer at a time,
	// and River's SQLite driver asks for a single connection to avoid
	// SQLITE_BUSY between its own goroutines. SaveEvent's group commit makes
	// that one connection enough.
	write *sql.DB
	// read is a query_only pool, so that Status and lookups never queue
	// behind the writer (WAL lets readers run beside it).
	read *sql.DB
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
	e := &sqliteEngine{restartPages: cfg.WALRestartPages}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.close())
		}
	}()

	e.write, err = sql.Open("sqlite", sqliteDSN(cfg.DSN, sqliteParams(cfg, poolWrite)))
	if err != nil {
		return nil, nil, sqliteError("open", err)
	}
	e.write.SetMaxOpenConns(1)
	e.write.SetMaxIdleConns(1)
	e.write.SetConnMaxLifetime(0)
	e.write.SetConnMaxIdleTime(0)
	// sql.Open connects lazily: connecting now reports a bad path or DSN here.
	if err := e.write.PingContext(ctx); err != nil {
		return nil, nil, sqliteError("open", err)
	}
	if err := migrateSQLite(ctx, e.write, cfg.Now); err != nil {
		return nil, nil, err
	}

	// Opened after the migrations, so the file is already in WAL mode.
	e.read, err = sql.Open("sqlite", sqliteDSN(cfg.DSN, sqliteParams(cfg, poolRead)))
	if err != nil {
		return nil, nil, sqliteError("open read pool", err)
	}
	e.read.SetMaxOpenConns(cfg.ReadConns)
	e.read.SetMaxIdleConns(cfg.ReadConns)
	if err := e.read.PingContext(ctx); err != nil {
		return nil, nil, sqliteError("open read pool", err)
	}

	e.ckpt, err = sql.Open("sqlite", sqliteDSN(cfg.DSN, sqliteParams(cfg, poolCheckpoint)))
	if err != nil {
		return nil, nil, sqliteError("open checkpointer", err)
	}
	e.ckpt.SetMaxOpenConns(1)
	if err := e.ckpt.PingContext(ctx); err != nil {
		return nil, nil, sqliteError("open checkpointer", err)
	}
	ckptCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	e.stopCkpt, e.ckptDone = stop, make(chan struct{})
	go e.checkpointLoop(ckptCtx, cfg.CheckpointInterval, cfg.Logger)

	return e, riversqlite.New(e.write), nil
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
	return checkpoint(ctx, e.write)
}

// checkpoint runs a PASSIVE checkpoint on db and returns the number of
// frames in the WAL.
func checkpoint(ctx context.Context, db *sql.DB) (int64, error) {
	var busy, frames, copied int64
	err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
	if err != nil {
		return 0, sqliteError("checkpoint", err)
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

// sqliteError translates a driver error into the store's vocabulary. It is
// the only place that looks at SQLite error codes. op says what failed.
func sqliteError(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrNotFound, op)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		// Codes are extended (e.g. SQLITE_CONSTRAINT_UNIQUE); the low byte
		// is the primary code.
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_CONSTRAINT:
			return fmt.Errorf("%w: %s: %w", ErrConflict, op, err)
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return fmt.Errorf("store: %s: %w: %w", op, errBusy, err)
		}
	}
	return fmt.Errorf("store: %s: %w", op, err)
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
		return sqliteError("create schema_migrations", err)
	}
	migs, err := readMigrations(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		return err
	}
	for _, m := range migs {
		if err := applySQLiteMigration(ctx, db, m, now()); err != nil {
			return err
		}
	}
	return nil
}

// applySQLiteMigration applies m unless it is recorded. The check runs in the
// migration's own (immediate) transaction, so two processes opening the same
// file at once cannot both apply it.
func applySQLiteMigration(ctx context.Context, db *sql.DB, m migration, now time.Time) (err error) {
	op := fmt.Sprintf("migration %03d_%s", m.version, m.name)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return sqliteError(op, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	var applied int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&applied); err != nil {
		return sqliteError(op, err)
	}
	if applied > 0 {
		return tx.Rollback()
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return sqliteError(op, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.version, m.name, now.UnixMilli()); err != nil {
		return sqliteError(op, err)
	}
	if err := tx.Commit(); err != nil {
		return sqliteError(op, err)
	}
	return nil
}

const eventColumns = `dedup_key, corp_id, receive_id, kind, event, change_type, user_id, external_userid,
	chat_id, members, create_time, raw, state, reason, duplicates, received_at, updated_at, source`

const eventColumnCount = 18

// eventPlaceholders is one VALUES row for eventColumns.
var eventPlaceholders = "(" + strings.TrimSuffix(strings.Repeat("?, ", eventColumnCount), ", ") + ")"

// saveEvents implements engine. The batch is one transaction: a multi-row
// INSERT … ON CONFLICT DO NOTHING RETURNING tells which keys are new; keys
// already stored get their duplicate counter incremented; the jobs of the new
// events and the per-kind counters are written before the single commit.
func (e *sqliteEngine) saveEvents(ctx context.Context, jobs jobInserter, evs []*Event, now time.Time) (_ []saveResult, err error) {
	nowMS := now.UnixMilli()
	receivedAt := time.UnixMilli(nowMS).UTC()

	// Dedup inside the batch first: only the first event of each key goes to
	// the database, and later copies count as its duplicates.
	first := make(map[string]int, len(evs))
	uniq := make([]int, 0, len(evs))
	copies := make(map[int]int64)
	for i, ev := range evs {
		if j, ok := first[ev.DedupKey]; ok {
			copies[j]++
			continue
		}
		first[ev.DedupKey] = i
		uniq = append(uniq, i)
	}

	tx, err := e.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, sqliteError("begin", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()

	var q strings.Builder
	q.Grow(len(uniq)*(len(eventPlaceholders)+2) + 512)
	q.WriteString("INSERT INTO events (" + eventColumns + ") VALUES ")
	args := make([]any, 0, len(uniq)*eventColumnCount)
	states := make(map[int]string, len(uniq))
	for n, i := range uniq {
		if n > 0 {
			q.WriteString(", ")
		}
		q.WriteString(eventPlaceholders)
		ev := evs[i]
		var members, createTime any
		if len(ev.Members) > 0 {
			b, _ := json.Marshal(ev.Members) // []string always marshals
			members = string(b)
		}
		if !ev.CreateTime.IsZero() {
			createTime = ev.CreateTime.Unix()
		}
		// The state depends on whether the event has jobs; the id they
		// carry is known only after the insert, so they are built again then.
		states[i] = initialState(ev, len(jobs.eventJobs(ev, 0)) > 0)
		args = append(args, ev.DedupKey, ev.CorpID, ev.ReceiveID, ev.Kind, ev.Event, ev.ChangeType,
			ev.UserID, ev.ExternalUserID, ev.ChatID, members, createTime, ev.Raw, states[i],
			ev.Reason, copies[i], nowMS, nowMS, ev.Source)
	}
	q.WriteString(" ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key")

	ids := make(map[string]int64, len(uniq))
	rows, err := tx.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, sqliteError("insert events", err)
	}
	for rows.Next() {
		var (
			id  int64
			key string
		)
		if err := rows.Scan(&id, &key); err != nil {
			_ = rows.Close()
			return nil, sqliteError("insert events", err)
		}
		ids[key] = id
	}
	if err := rows.Close(); err != nil {
		return nil, sqliteError("insert events", err)
	}
	if err := rows.Err(); err != nil {
		return nil, sqliteError("insert events", err)
	}

	type counter struct{ received, duplicates int64 }
	counts := make(map[string]*counter)
	results := make([]saveResult, len(evs))
	var params []river.InsertManyParams
	for _, i := range uniq {
		ev := evs[i]
		c := counts[ev.Kind]
		if c == nil {
			c = &counter{}
			counts[ev.Kind] = c
		}
		if id, ok := ids[ev.DedupKey]; ok {
			results[i] = saveResult{inserted: true, id: id, state: states[i], receivedAt: receivedAt}
			c.received++
			c.duplicates += copies[i]
			params = append(params, jobs.eventJobs(ev, id)...)
			if err := applyEventFollows(ctx, tx, ev, id, nowMS, followChanges(ev, id, receivedAt)); err != nil {
				return nil, err
			}
			continue
		}
		// Stored by an earlier batch: count the repeat, answer with the
		// stored row.
		var (
			r    saveResult
			recv int64
		)
		err := tx.QueryRowContext(ctx,
			`UPDATE events SET duplicates = duplicates + ? WHERE dedup_key = ? RETURNING id, state, received_at`,
			1+copies[i], ev.DedupKey).Scan(&r.id, &r.state, &recv)
		if err != nil {
			return nil, sqliteError("count duplicate event", err)
		}
		r.receivedAt = time.UnixMilli(recv).UTC()
		results[i] = r
		c.duplicates += 1 + copies[i]
	}
	for i, ev := range evs {
		if j := first[ev.DedupKey]; j != i {
			results[i] = results[j]
			results[i].inserted = false
		}
	}

	for kind, c := range counts {
		_, err := tx.ExecContext(ctx, `INSERT INTO event_counters (kind, received, duplicates) VALUES (?, ?, ?)
			ON CONFLICT (kind) DO UPDATE SET received = received + excluded.received,
				duplicates = duplicates + excluded.duplicates`,
			kind, c.received, c.duplicates)
		if err != nil {
			return nil, sqliteError("count events", err)
		}
	}

	if len(params) > 0 {
		if _, err := jobs.rc.InsertManyFastTx(ctx, tx, params); err != nil {
			return nil, sqliteError("enqueue jobs", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, sqliteError("commit events", err)
	}
	return results, nil
}

// findEventByID implements engine.
func (e *sqliteEngine) findEventByID(ctx context.Context, id int64) (*Event, error) {
	var (
		ev         Event
		members    sql.NullString
		createTime sql.NullInt64
		receivedAt int64
	)
	err := e.read.QueryRowContext(ctx, `SELECT id, dedup_key, corp_id, receive_id, kind, event, change_type,
			user_id, external_userid, chat_id, members, create_time, raw, state, reason, received_at, source
		FROM events WHERE id = ?`, id).Scan(&ev.ID, &ev.DedupKey, &ev.CorpID, &ev.ReceiveID, &ev.Kind,
		&ev.Event, &ev.ChangeType, &ev.UserID, &ev.ExternalUserID, &ev.ChatID, &members, &createTime,
		&ev.Raw, &ev.State, &ev.Reason, &receivedAt, &ev.Source)
	if err != nil {
		return nil, sqliteError(fmt.Sprintf("find event %d", id), err)
	}
	if members.Valid {
		if err := json.Unmarshal([]byte(members.String), &ev.Members); err != nil {
			return nil, fmt.Errorf("store: find event %d: members: %w", id, err)
		}
	}
	if createTime.Valid {
		ev.CreateTime = time.Unix(createTime.Int64, 0).UTC()
	}
	ev.ReceivedAt = time.UnixMilli(receivedAt).UTC()
	return &ev, nil
}

// updateEventState implements engine.
func (e *sqliteEngine) updateEventState(ctx context.Context, id int64, state, reason string, now time.Time) error {
	op := fmt.Sprintf("update event %d", id)
	res, err := e.write.ExecContext(ctx, `UPDATE events SET state = ?, reason = ?, updated_at = ? WHERE id = ?`,
		state, reason, now.UnixMilli(), id)
	if err != nil {
		return sqliteError(op, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return sqliteError(op, err)
	} else if n == 0 {
		return fmt.Errorf("%w: event %d", ErrNotFound, id)
	}
	return nil
}

// pruneChunk bounds one prune transaction, so SaveEvent batches never wait
// long behind a prune.
const pruneChunk = 1000

// pruneEvents implements engine, deleting in chunks.
func (e *sqliteEngine) pruneEvents(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		res, err := e.write.ExecContext(ctx, `DELETE FROM events WHERE id IN (
				SELECT id FROM events WHERE received_at < ? AND state <> 'pending' ORDER BY received_at LIMIT ?)`,
			before.UnixMilli(), pruneChunk)
		if err != nil {
			return total, sqliteError("prune events", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, sqliteError("prune events", err)
		}
		total += n
		if n < pruneChunk {
			return total, nil
		}
	}
}

// status implements engine.
func (e *sqliteEngine) status(ctx context.Context) (Status, error) {
	s := Status{EventsByType: make(map[string]int64)}
	rows, err := e.read.QueryContext(ctx, `SELECT kind, received, duplicates FROM event_counters`)
	if err != nil {
		return Status{}, sqliteError("status", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			kind                 string
			received, duplicates int64
		)
		if err := rows.Scan(&kind, &received, &duplicates); err != nil {
			return Status{}, sqliteError("status", err)
		}
		s.EventsReceived += received
		s.EventsDuplicate += duplicates
		if received > 0 {
			s.EventsByType[kind] = received
		}
		if kind == KindIgnored {
			s.EventsIgnored = received
		}
	}
	if err := rows.Err(); err != nil {
		return Status{}, sqliteError("status", err)
	}
	err = e.read.QueryRowContext(ctx, `SELECT count(*) FROM river_job
		WHERE state IN ('available', 'scheduled', 'retryable', 'pending', 'running')`).Scan(&s.QueuePending)
	if err != nil {
		return Status{}, sqliteError("status", err)
	}
	return s, nil
}

// counts implements engine. One statement, so every count comes from the
// same snapshot.
func (e *sqliteEngine) counts(ctx context.Context) (Counts, error) {
	var c Counts
	err := e.read.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM events),
		(SELECT count(*) FROM fans),
		(SELECT count(*) FROM fan_pending_ids),
		(SELECT count(*) FROM resolutions),
		(SELECT count(*) FROM links),
		(SELECT count(*) FROM links WHERE active = 1),
		(SELECT count(*) FROM outbox),
		(SELECT count(*) FROM outbox WHERE delivered_at IS NULL),
		(SELECT count(*) FROM quota_counters),
		(SELECT count(*) FROM river_job WHERE state IN ('available', 'scheduled', 'retryable', 'pending', 'running'))`).Scan(
		&c.Events, &c.Fans, &c.FanPendingIDs, &c.Resolutions, &c.Links, &c.LinksActive,
		&c.Outbox, &c.OutboxUndelivered, &c.QuotaCounters, &c.Jobs)
	return c, sqliteError("counts", err)
}

// addQuota implements engine.
func (e *sqliteEngine) addQuota(ctx context.Context, key string, bucket, n int64) error {
	_, err := e.write.ExecContext(ctx, `INSERT INTO quota_counters (key, bucket, count) VALUES (?, ?, ?)
		ON CONFLICT (key, bucket) DO UPDATE SET count = count + excluded.count`, key, bucket, n)
	return sqliteError("add quota", err)
}

// reserveQuota implements engine. The single write connection makes the
// check and the increment one step.
func (e *sqliteEngine) reserveQuota(ctx context.Context, key string, bucket int64, limits []quota.Limit) (bool, error) {
	var q strings.Builder
	q.WriteString(`INSERT INTO quota_counters (key, bucket, count) SELECT ?, ?, 1 WHERE 1`)
	args := []any{key, bucket}
	for _, l := range limits {
		q.WriteString(` AND (SELECT COALESCE(sum(count), 0) FROM quota_counters WHERE key = ? AND bucket > ?) < ?`)
		args = append(args, key, l.After, l.Max)
	}
	q.WriteString(` ON CONFLICT (key, bucket) DO UPDATE SET count = count + 1`)
	res, err := e.write.ExecContext(ctx, q.String(), args...)
	if err != nil {
		return false, sqliteError("reserve quota", err)
	}
	n, err := res.RowsAffected()
	return n == 1, sqliteError("reserve quota", err)
}

// loadQuota implements engine.
func (e *sqliteEngine) loadQuota(ctx context.Context, key string, since int64) (map[int64]int64, error) {
	rows, err := e.read.QueryContext(ctx, `SELECT bucket, count FROM quota_counters WHERE key = ? AND bucket >= ?`, key, since)
	if err != nil {
		return nil, sqliteError("load quota", err)
	}
	defer rows.Close()
	out := make(map[int64]int64)
	for rows.Next() {
		var bucket, count int64
		if err := rows.Scan(&bucket, &count); err != nil {
			return nil, sqliteError("load quota", err)
		}
		out[bucket] = count
	}
	if err := rows.Err(); err != nil {
		return nil, sqliteError("load quota", err)
	}
	return out, nil
}

// pruneQuota implements engine.
func (e *sqliteEngine) pruneQuota(ctx context.Context, before int64) (int64, error) {
	res, err := e.write.ExecContext(ctx, `DELETE FROM quota_counters WHERE bucket < ?`, before)
	if err != nil {
		return 0, sqliteError("prune quota", err)
	}
	n, err := res.RowsAffected()
	return n, sqliteError("prune quota", err)
}

// ping implements engine.
func (e *sqliteEngine) ping(ctx context.Context) error {
	if err := e.write.PingContext(ctx); err != nil {
		return sqliteError("ping", err)
	}
	return sqliteError("ping read pool", e.read.PingContext(ctx))
}

func (e *sqliteEngine) writePool() *sql.DB { return e.write }

// resumeOrphanedJobs implements engine. One process serves a SQLite file
// (the single writer connection is its lock on the work), so at start any
// job still marked running was being worked by a process that died. River's
// rescuer would wait RescueStuckJobsAfter; the jobs are idempotent, so they
// run again now. This writes River's table directly: River has no API to
// release a running job.
func (e *sqliteEngine) resumeOrphanedJobs(ctx context.Context) (int64, error) {
	res, err := e.write.ExecContext(ctx, `UPDATE river_job SET state = 'available' WHERE state = 'running'`)
	if err != nil {
		return 0, sqliteError("resume running jobs", err)
	}
	n, err := res.RowsAffected()
	return n, sqliteError("resume running jobs", err)
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
	if e.read != nil {
		errs = append(errs, e.read.Close())
	}
	if e.write != nil {
		errs = append(errs, e.write.Close())
	}
	return errors.Join(errs...)
}
