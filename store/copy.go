package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// copyTables are the tables Copy moves, parents before children, each with
// its primary key (the order it is read in, and how a resumed copy skips
// rows already there).
var copyTables = []struct {
	name string
	key  []string
}{
	{"event_counters", []string{"kind"}},
	{"events", []string{"id"}},
	{"fans", []string{"unionid"}},
	{"fan_pending_ids", []string{"pending_id"}},
	{"resolutions", []string{"id"}},
	{"follows", []string{"corp_id", "external_userid", "user_id", "chat_id"}},
	{"chat_dismissals", []string{"corp_id", "chat_id"}},
	{"links", []string{"id"}},
	{"outbox", []string{"id"}},
	{"quota_counters", []string{"key", "bucket"}},
	{"reconcile_sweeps", []string{"id"}},
	{"renewal_observations", []string{"outcome"}},
}

// CopyProgress reports a table's progress: rows read so far of total.
type CopyProgress func(table string, done, total int64)

// CopyReport says what Copy found in each table: rows in the source and in
// the destination afterwards, and unfinished jobs carried over.
type CopyReport struct {
	Tables []CopyCount
	// Jobs counts the unfinished River jobs copied (available, scheduled,
	// retryable, pending; running ones as available).
	Jobs int
}

// CopyCount is one table's row counts.
type CopyCount struct {
	Table    string
	Source   int64
	Copied   int64 // rows this run inserted
	Dest     int64 // rows in the destination afterwards
	Verified bool  // Dest >= Source
}

// Copy copies every row of src into dst (both open and migrated; dst
// usually a fresh PostgreSQL database), table by table in batches, and the
// unfinished jobs (in one transaction, without their unique options: a
// register job copied is not deduplicated against one queued later). It is resumable: a row already in dst is skipped, so
// running it again after an interruption finishes the copy. Stop the
// service on src first, or rows written meanwhile may be missed. The
// report verifies each table by counts, and the destination's status
// counts (CheckTallies) are checked against a recount.
func Copy(ctx context.Context, src, dst *DB, batch int, progress CopyProgress) (CopyReport, error) {
	if batch <= 0 {
		batch = 1000
	}
	var rep CopyReport
	for _, t := range copyTables {
		c, err := copyTable(ctx, src, dst, t.name, t.key, batch, progress)
		if err != nil {
			return rep, fmt.Errorf("store: copy %s: %w", t.name, err)
		}
		rep.Tables = append(rep.Tables, c)
	}
	if err := afterCopy(ctx, dst); err != nil {
		return rep, fmt.Errorf("store: copy: %w", err)
	}
	// dst's triggers counted the rows as they arrived; a recount checks
	// them, and the copy with them.
	drift, err := dst.CheckTallies(ctx)
	if err != nil {
		return rep, fmt.Errorf("store: copy: %w", err)
	}
	if len(drift) > 0 {
		return rep, fmt.Errorf("store: copy: the destination's status counts differ from a recount: %v", drift)
	}
	n, err := copyJobs(ctx, src, dst)
	rep.Jobs = n
	if err != nil {
		return rep, fmt.Errorf("store: copy jobs: %w", err)
	}
	return rep, nil
}

// sqlOf returns the engine's shared SQL layer.
func sqlOf(db *DB) *sqlEngine { return db.eng.shared() }

// placeholders returns n placeholders from the first-th on, comma-separated.
func placeholders(d *dialect, first, n int) string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = d.placeholder(first + i)
	}
	return strings.Join(ps, ", ")
}

// afterCopy moves PostgreSQL's identity sequences past the copied ids, so
// that new rows do not collide with them.
func afterCopy(ctx context.Context, dst *DB) error {
	e := sqlOf(dst)
	if !e.d.numbered {
		return nil // SQLite's AUTOINCREMENT follows the ids inserted
	}
	for _, t := range []string{"events", "resolutions", "links", "outbox", "reconcile_sweeps"} {
		if _, err := e.write.DB.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('`+t+`', 'id'),
			GREATEST((SELECT max(id) FROM `+t+`), 1))`); err != nil {
			return fmt.Errorf("reset the id sequence of %s: %w", t, err)
		}
	}
	return nil
}

func tableRows(ctx context.Context, db *DB, table string) (int64, error) {
	var n int64
	err := db.eng.writePool().QueryRowContext(ctx, `SELECT count(*) FROM `+table).Scan(&n)
	return n, err
}

func copyTable(ctx context.Context, src, dst *DB, table string, key []string, batch int, progress CopyProgress) (CopyCount, error) {
	c := CopyCount{Table: table}
	var err error
	if c.Source, err = tableRows(ctx, src, table); err != nil {
		return c, err
	}
	// The columns come from the destination's schema, which has every
	// column of the source's (both are migrated to the same version).
	cols, err := columnsOf(ctx, dst, table)
	if err != nil {
		return c, err
	}
	keyIdx := make([]int, len(key))
	for i, k := range key {
		keyIdx[i] = -1
		for j, col := range cols {
			if col == k {
				keyIdx[i] = j
			}
		}
		if keyIdx[i] < 0 {
			return c, fmt.Errorf("key column %s missing", k)
		}
	}
	// PostgreSQL takes at most 65,535 parameters a statement.
	batch = max(1, min(batch, 60_000/len(cols)))
	colList := strings.Join(cols, ", ")
	keyList := strings.Join(key, ", ")
	var (
		after []any
		done  int64
	)
	for {
		q := `SELECT ` + colList + ` FROM ` + table
		args := []any{}
		if after != nil {
			q += ` WHERE (` + keyList + `) > (` + placeholders(sqlOf(src).d, 1, len(key)) + `)`
			args = append(args, after...)
		}
		q += ` ORDER BY ` + keyList + ` LIMIT ` + fmt.Sprint(batch)
		rows, err := src.eng.writePool().QueryContext(ctx, q, args...)
		if err != nil {
			return c, err
		}
		var page [][]any
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return c, err
			}
			page = append(page, vals)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return c, err
		}
		if len(page) == 0 {
			break
		}
		n, err := insertPage(ctx, dst, table, cols, page)
		if err != nil {
			return c, err
		}
		c.Copied += n
		done += int64(len(page))
		if progress != nil {
			progress(table, done, c.Source)
		}
		last := page[len(page)-1]
		after = make([]any, len(key))
		for i, j := range keyIdx {
			after[i] = last[j]
		}
		if len(page) < batch {
			break
		}
	}
	if c.Dest, err = tableRows(ctx, dst, table); err != nil {
		return c, err
	}
	c.Verified = c.Dest >= c.Source
	return c, nil
}

// columnsOf lists a table's columns as the database reports them.
func columnsOf(ctx context.Context, db *DB, table string) ([]string, error) {
	rows, err := db.eng.writePool().QueryContext(ctx, `SELECT * FROM `+table+` LIMIT 0`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return rows.Columns()
}

// insertPage inserts rows, skipping those already there, in one statement.
func insertPage(ctx context.Context, dst *DB, table string, cols []string, page [][]any) (int64, error) {
	var q strings.Builder
	q.WriteString(`INSERT INTO ` + table + ` (` + strings.Join(cols, ", ") + `) VALUES `)
	args := make([]any, 0, len(page)*len(cols))
	for i, row := range page {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(" + placeholders(sqlOf(dst).d, len(args)+1, len(cols)) + ")")
		args = append(args, row...)
	}
	q.WriteString(` ON CONFLICT DO NOTHING`)
	res, err := dst.eng.writePool().ExecContext(ctx, q.String(), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// rawArgs carries a job's arguments as stored, so a job of any kind can be
// inserted again without its Go type.
type rawArgs struct {
	kind string
	raw  json.RawMessage
}

func (a rawArgs) Kind() string                 { return a.kind }
func (a rawArgs) MarshalJSON() ([]byte, error) { return a.raw, nil }

// copyJobs inserts src's unfinished River jobs into dst, unless dst has
// unfinished jobs already (a resumed copy: they were copied).
func copyJobs(ctx context.Context, src, dst *DB) (int, error) {
	unfinished := []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStateScheduled,
		rivertype.JobStateRetryable, rivertype.JobStatePending, rivertype.JobStateRunning}
	have, err := dst.river.JobList(ctx, river.NewJobListParams().States(unfinished...).First(1))
	if err != nil {
		return 0, err
	}
	if len(have.Jobs) > 0 {
		return 0, nil
	}
	// All in one transaction: a copy cut short leaves no job behind, so
	// the check above can tell a resumed copy by any job at all.
	tx, err := dst.eng.writePool().BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback() }()
	params := river.NewJobListParams().States(unfinished...).First(10_000)
	n := 0
	for {
		res, err := src.river.JobList(ctx, params)
		if err != nil {
			return 0, err
		}
		if len(res.Jobs) == 0 {
			return n, tx.Commit()
		}
		batch := make([]river.InsertManyParams, 0, len(res.Jobs))
		for _, j := range res.Jobs {
			opts := &river.InsertOpts{Queue: j.Queue, Priority: j.Priority, MaxAttempts: j.MaxAttempts,
				Metadata: j.Metadata, Tags: j.Tags}
			if j.State == rivertype.JobStateScheduled || j.State == rivertype.JobStateRetryable {
				opts.ScheduledAt = j.ScheduledAt
			}
			batch = append(batch, river.InsertManyParams{Args: rawArgs{kind: j.Kind, raw: j.EncodedArgs}, InsertOpts: opts})
		}
		if _, err := dst.river.InsertManyTx(ctx, tx, batch); err != nil {
			return 0, err
		}
		n += len(batch)
		if res.LastCursor == nil {
			return n, tx.Commit()
		}
		params = params.After(res.LastCursor)
	}
}
