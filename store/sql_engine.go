package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/pendinglink/pendinglink/quota"
)

// sqlEngine is the engine both databases share: every method of engine
// except close and resumeOrphanedJobs, which sqliteEngine and postgresEngine
// add. The SQL is written once, with ? placeholders, in the subset both
// databases accept (RETURNING, ON CONFLICT … DO UPDATE with qualified
// columns, row values, EXISTS scanned into bool, aliased subqueries); what
// still differs is in dialect.
type sqlEngine struct {
	d *dialect
	// write takes every write and River's queries; its transactions are
	// *sql.Tx, River's transaction type.
	write sqlDB
	// read serves Status and the Find/Load methods. On PostgreSQL it is the
	// same pool as write.
	read sqlDB
}

// dialect is what differs between the engines' SQL, and how a write
// transaction starts.
type dialect struct {
	// numbered is true when the driver wants $1, $2, … rather than ?.
	numbered bool
	// strpos is the function giving the 1-based position of a substring:
	// instr (SQLite) or strpos (PostgreSQL).
	strpos string
	// lockWrites, when set, runs first in every write transaction begin
	// starts, so that they run one at a time as on SQLite's single writer
	// connection (see lockPostgresWrites).
	lockWrites func(ctx context.Context, tx *sql.Tx) error
	// indexHints: the planner is SQLite's, which without statistics (the
	// store never runs ANALYZE) may sort a whole table where an index
	// already holds the order; see indexedBy.
	indexHints bool
	// rebound caches bind's result per query string. Queries are constants
	// or built from a few optional clauses, so the cache stays small; the
	// one query that grows with its input (saveEvents) numbers its own
	// placeholders.
	rebound sync.Map
}

// bind rewrites the ? placeholders of query for the driver. The store's SQL
// has no ? inside string literals or identifiers, but quotes are skipped
// anyway so that such a literal would stay intact.
func (d *dialect) bind(query string) string {
	if !d.numbered {
		return query
	}
	if q, ok := d.rebound.Load(query); ok {
		return q.(string)
	}
	var (
		b     strings.Builder
		n     int
		quote byte
	)
	b.Grow(len(query) + 16)
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	q := b.String()
	d.rebound.Store(query, q)
	return q
}

// indexedBy is the clause that makes SQLite read a table through index,
// and nothing on PostgreSQL, whose planner finds the index by itself.
func (d *dialect) indexedBy(index string) string {
	if !d.indexHints {
		return ""
	}
	return " INDEXED BY " + index
}

// placeholder returns the placeholder of the n-th (1-based) argument.
func (d *dialect) placeholder(n int) string {
	if d.numbered {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

// contains is a condition true when column contains the next argument.
func (d *dialect) contains(column string) string {
	return d.strpos + "(" + column + ", ?) > 0"
}

// sqlDB is a pool whose queries are written with ? placeholders. With
// stmts set, it runs them as prepared statements.
type sqlDB struct {
	*sql.DB
	d     *dialect
	stmts *stmtCache
}

func (db sqlDB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := db.stmts.get(ctx, query); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return db.DB.ExecContext(ctx, db.d.bind(query), args...)
}

func (db sqlDB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := db.stmts.get(ctx, query); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return db.DB.QueryContext(ctx, db.d.bind(query), args...)
}

func (db sqlDB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if s := db.stmts.get(ctx, query); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return db.DB.QueryRowContext(ctx, db.d.bind(query), args...)
}

// Close closes the prepared statements, then the pool.
func (db sqlDB) Close() error {
	return errors.Join(db.stmts.close(), db.DB.Close())
}

// sqlTx is a write transaction whose queries are written with ?
// placeholders, run as the write pool's prepared statements where stmts
// has them. Its Tx goes to River as is.
type sqlTx struct {
	*sql.Tx
	d     *dialect
	stmts *stmtCache
}

// A statement bound to the transaction is closed right after its call:
// that only releases the binding (the pool's statement stays prepared), and
// the row it returned stays readable.

func (tx *sqlTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := tx.stmts.inTx(ctx, tx.Tx, query); s != nil {
		defer s.Close()
		return s.ExecContext(ctx, args...)
	}
	return tx.Tx.ExecContext(ctx, tx.d.bind(query), args...)
}

// QueryContext runs unprepared: the transaction's one connection holds
// one SQLite statement per prepared query, which could not run again while
// these rows are open (SQLITE_MISUSE). QueryRowContext's row is read at once.
func (tx *sqlTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return tx.Tx.QueryContext(ctx, tx.d.bind(query), args...)
}

func (tx *sqlTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if s := tx.stmts.inTx(ctx, tx.Tx, query); s != nil {
		defer s.Close()
		return s.QueryRowContext(ctx, args...)
	}
	return tx.Tx.QueryRowContext(ctx, tx.d.bind(query), args...)
}

// nullTime is a nullable unix-millisecond column as a time, nil if NULL.
func nullTime(ms sql.NullInt64) *time.Time {
	if !ms.Valid {
		return nil
	}
	t := time.UnixMilli(ms.Int64).UTC()
	return &t
}

// querier is a pool (sqlDB) or a transaction (*sqlTx): queryEach and
// queryRows read from either.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// queryEach runs query and hands each row to each, which scans it; any
// error, the query's, each's or the rows', is wrapped as op.
func queryEach(ctx context.Context, q querier, op, query string, each func(rowScanner) error, args ...any) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return dbError(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows); err != nil {
			return dbError(op, err)
		}
	}
	return dbError(op, rows.Err())
}

// queryRows runs query and returns its rows, each read by scan. A failed
// query or scan returns no rows; a failure met while iterating returns
// those read before it.
func queryRows[T any](ctx context.Context, q querier, op, query string, scan func(rowScanner) (T, error), args ...any) ([]T, error) {
	var out []T
	err := queryEach(ctx, q, op, query, func(r rowScanner) error {
		v, err := scan(r)
		if err != nil {
			out = nil
			return err
		}
		out = append(out, v)
		return nil
	}, args...)
	return out, err
}

// begin starts a write transaction, serialised with the others where the
// dialect asks (lockWrites).
func (e *sqlEngine) begin(ctx context.Context) (*sqlTx, error) {
	e.write.stmts.prepareWanted(ctx)
	tx, err := e.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	if e.d.lockWrites != nil {
		if err := e.d.lockWrites(ctx, tx); err != nil {
			return nil, errors.Join(err, tx.Rollback())
		}
	}
	return &sqlTx{Tx: tx, d: e.d, stmts: e.write.stmts}, nil
}

// dbError translates a driver error into the store's vocabulary: no row is
// ErrNotFound, a broken constraint ErrConflict, a lock not obtained in time
// errBusy. The codes themselves are read by sqliteErrorKind and
// postgresErrorKind, the only places that know them. op says what failed.
func dbError(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrNotFound, op)
	}
	kind := sqliteErrorKind(err)
	if kind == nil {
		kind = postgresErrorKind(err)
	}
	switch kind {
	case ErrConflict:
		return fmt.Errorf("%w: %s: %w", ErrConflict, op, err)
	case errBusy:
		return fmt.Errorf("store: %s: %w: %w", op, errBusy, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

const eventColumns = `dedup_key, corp_id, receive_id, kind, event, change_type, user_id, external_userid,
	chat_id, members, create_time, raw, state, reason, duplicates, received_at, updated_at, source`

const eventColumnCount = 18

// saveEvents implements engine. The batch is one transaction: a multi-row
// INSERT … ON CONFLICT DO NOTHING RETURNING tells which keys are new; keys
// already stored get their duplicate counter incremented; the jobs of the new
// events and the per-kind counters are written before the single commit.
func (e *sqlEngine) saveEvents(ctx context.Context, jobs jobInserter, evs []*Event, now time.Time) (_ []saveResult, err error) {
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

	tx, err := e.begin(ctx)
	if err != nil {
		return nil, dbError("begin", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()

	var q strings.Builder
	// One multi-row INSERT for the whole batch. Its placeholders are numbered
	// here rather than by bind, whose cache would keep one string per batch
	// size.
	q.Grow(len(uniq)*eventColumnCount*5 + 512)
	q.WriteString("INSERT INTO events (" + eventColumns + ") VALUES ")
	args := make([]any, 0, len(uniq)*eventColumnCount)
	states := make(map[int]string, len(uniq))
	for n, i := range uniq {
		if n > 0 {
			q.WriteString(", ")
		}
		q.WriteByte('(')
		for c := range eventColumnCount {
			if c > 0 {
				q.WriteString(", ")
			}
			q.WriteString(e.d.placeholder(n*eventColumnCount + c + 1))
		}
		q.WriteByte(')')
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
	rows, err := tx.Tx.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, dbError("insert events", err)
	}
	for rows.Next() {
		var (
			id  int64
			key string
		)
		if err := rows.Scan(&id, &key); err != nil {
			_ = rows.Close()
			return nil, dbError("insert events", err)
		}
		ids[key] = id
	}
	if err := rows.Close(); err != nil {
		return nil, dbError("insert events", err)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("insert events", err)
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
			return nil, dbError("count duplicate event", err)
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
			ON CONFLICT (kind) DO UPDATE SET received = event_counters.received + excluded.received,
				duplicates = event_counters.duplicates + excluded.duplicates`,
			kind, c.received, c.duplicates)
		if err != nil {
			return nil, dbError("count events", err)
		}
	}

	if len(params) > 0 {
		if _, err := jobs.rc.InsertManyFastTx(ctx, tx.Tx, params); err != nil {
			return nil, dbError("enqueue jobs", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, dbError("commit events", err)
	}
	return results, nil
}

// findEventByID implements engine.
func (e *sqlEngine) findEventByID(ctx context.Context, id int64) (*Event, error) {
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
		return nil, dbError(fmt.Sprintf("find event %d", id), err)
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
func (e *sqlEngine) updateEventState(ctx context.Context, id int64, state, reason string, now time.Time) error {
	op := fmt.Sprintf("update event %d", id)
	res, err := e.execLocked(ctx, op, `UPDATE events SET state = ?, reason = ?, updated_at = ? WHERE id = ?`,
		state, reason, now.UnixMilli(), id)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return dbError(op, err)
	} else if n == 0 {
		return fmt.Errorf("%w: event %d", ErrNotFound, id)
	}
	return nil
}

// pruneChunk bounds one prune transaction, so SaveEvent batches never wait
// long behind a prune.
const pruneChunk = 1000

// pruneEvents implements engine, deleting in chunks.
func (e *sqlEngine) pruneEvents(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		res, err := e.execLocked(ctx, "prune events", `DELETE FROM events WHERE id IN (
				SELECT id FROM events WHERE received_at < ? AND state <> 'pending' ORDER BY received_at LIMIT ?)`,
			before.UnixMilli(), pruneChunk)
		if err != nil {
			return total, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, dbError("prune events", err)
		}
		total += n
		if n < pruneChunk {
			return total, nil
		}
	}
}

// status implements engine.
func (e *sqlEngine) status(ctx context.Context) (Status, error) {
	s := Status{EventsByType: make(map[string]int64)}
	err := queryEach(ctx, e.read, "status", `SELECT kind, received, duplicates FROM event_counters`, func(r rowScanner) error {
		var (
			kind                 string
			received, duplicates int64
		)
		if err := r.Scan(&kind, &received, &duplicates); err != nil {
			return err
		}
		s.EventsReceived += received
		s.EventsDuplicate += duplicates
		if received > 0 {
			s.EventsByType[kind] = received
		}
		if kind == KindIgnored {
			s.EventsIgnored = received
		}
		return nil
	})
	if err != nil {
		return Status{}, err
	}
	err = e.read.QueryRowContext(ctx, `SELECT count(*) FROM river_job
		WHERE state IN ('available', 'scheduled', 'retryable', 'pending', 'running')`).Scan(&s.QueuePending)
	if err != nil {
		return Status{}, dbError("status", err)
	}
	return s, nil
}

// counts implements engine. One statement, so every count comes from the
// same snapshot.
func (e *sqlEngine) counts(ctx context.Context) (Counts, error) {
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
	return c, dbError("counts", err)
}

// addQuota implements engine.
func (e *sqlEngine) addQuota(ctx context.Context, key string, bucket, n int64) error {
	_, err := e.write.ExecContext(ctx, `INSERT INTO quota_counters (key, bucket, count) VALUES (?, ?, ?)
		ON CONFLICT (key, bucket) DO UPDATE SET count = quota_counters.count + excluded.count`, key, bucket, n)
	return dbError("add quota", err)
}

// reserveQuota implements engine. The check and the increment are one
// statement, in a write transaction (begin): on SQLite the single write
// connection, on PostgreSQL the write lock, make it one step for every
// process sharing the database, so none can slip a call in between.
func (e *sqlEngine) reserveQuota(ctx context.Context, key string, bucket int64, limits []quota.Limit) (ok bool, err error) {
	var q strings.Builder
	// The casts type the selected placeholders for PostgreSQL, which cannot
	// infer them from the insert's columns.
	q.WriteString(`INSERT INTO quota_counters (key, bucket, count) SELECT CAST(? AS TEXT), CAST(? AS BIGINT), 1 WHERE 1 = 1`)
	args := []any{key, bucket}
	for _, l := range limits {
		q.WriteString(` AND (SELECT COALESCE(sum(count), 0) FROM quota_counters WHERE key = ? AND bucket > ?) < ?`)
		args = append(args, key, l.After, l.Max)
	}
	q.WriteString(` ON CONFLICT (key, bucket) DO UPDATE SET count = quota_counters.count + 1`)
	err = e.withTx(ctx, "reserve quota", func(tx *sqlTx) error {
		res, err := tx.ExecContext(ctx, q.String(), args...)
		if err != nil {
			return dbError("reserve quota", err)
		}
		n, err := res.RowsAffected()
		ok = n == 1
		return dbError("reserve quota", err)
	})
	return ok, err
}

// loadQuota implements engine.
func (e *sqlEngine) loadQuota(ctx context.Context, key string, since int64) (map[int64]int64, error) {
	out := make(map[int64]int64)
	err := queryEach(ctx, e.read, "load quota", `SELECT bucket, count FROM quota_counters WHERE key = ? AND bucket >= ?`,
		func(r rowScanner) error {
			var bucket, count int64
			err := r.Scan(&bucket, &count)
			out[bucket] = count
			return err
		}, key, since)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// pruneQuota implements engine.
func (e *sqlEngine) pruneQuota(ctx context.Context, before int64) (int64, error) {
	res, err := e.write.ExecContext(ctx, `DELETE FROM quota_counters WHERE bucket < ?`, before)
	if err != nil {
		return 0, dbError("prune quota", err)
	}
	n, err := res.RowsAffected()
	return n, dbError("prune quota", err)
}

// ping implements engine.
func (e *sqlEngine) ping(ctx context.Context) error {
	if err := e.write.PingContext(ctx); err != nil {
		return dbError("ping", err)
	}
	return dbError("ping read pool", e.read.PingContext(ctx))
}

func (e *sqlEngine) writePool() *sql.DB { return e.write.DB }

// shared returns the SQL layer both engines embed.
func (e *sqlEngine) shared() *sqlEngine { return e }
