package store

import (
	"context"
	"strings"
	"time"
)

// retryBatch bounds one re-drive transaction, so a large re-drive never
// holds the single writer for long.
const retryBatch = 500

// retryWhere builds the WHERE clause of a re-drive over events or fans, and
// its arguments.
func (e *sqlEngine) retryWhere(state, reasonCol, timeCol string, f RetryFilter) (string, []any) {
	where, args := []string{"state = ?"}, []any{state}
	if f.Reason != "" {
		where = append(where, e.d.contains(reasonCol))
		args = append(args, f.Reason)
	}
	if !f.Since.IsZero() {
		where = append(where, timeCol+" >= ?")
		args = append(args, f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		where = append(where, timeCol+" < ?")
		args = append(args, f.Until.UnixMilli())
	}
	return strings.Join(where, " AND "), args
}

// countWhere counts the rows of table a retry would select: its dry run.
func (e *sqlEngine) countWhere(ctx context.Context, op, table, where string, args []any) (int64, error) {
	var n int64
	err := e.read.QueryRowContext(ctx, `SELECT count(*) FROM `+table+` WHERE `+where, args...).Scan(&n)
	return n, dbError(op, err)
}

func (e *sqlEngine) retryEvents(ctx context.Context, jobs jobInserter, f RetryFilter, now time.Time) (int64, error) {
	where, args := e.retryWhere(f.State, "reason", "received_at", f)
	if f.DryRun {
		return e.countWhere(ctx, "count events to retry", "events", where, args)
	}
	var total int64
	// Each round moves up to retryBatch events out of the selected state,
	// so the next round's query finds the rest.
	for {
		var n int
		err := e.withTx(ctx, "retry events", func(tx *sqlTx) error {
			// queryRows checks rows.Err too: a read that broke part-way must
			// fail the round, not retry only the ids read before it.
			ids, err := queryRows(ctx, tx, "select events to retry", `SELECT id FROM events WHERE `+where+` ORDER BY id LIMIT ?`,
				scanOne[int64], append(args, retryBatch)...)
			if err != nil {
				return err
			}
			for _, id := range ids {
				ev, err := eventTx(ctx, tx, id)
				if err != nil {
					return err
				}
				if err := jobs.insert(ctx, tx.Tx, jobs.eventJobs(ev, id)); err != nil {
					return dbError("enqueue retried event", err)
				}
				if _, err := tx.ExecContext(ctx, `UPDATE events SET state = 'pending', reason = '', updated_at = ? WHERE id = ?`,
					now.UnixMilli(), id); err != nil {
					return dbError("retry event", err)
				}
			}
			n = len(ids)
			return nil
		})
		total += int64(n)
		if err != nil || n < retryBatch {
			return total, err
		}
	}
}

func (e *sqlEngine) retryFans(ctx context.Context, f RetryFilter, now time.Time) (int64, error) {
	where, args := e.retryWhere(FanFailed, "last_error", "updated_at", f)
	if f.DryRun {
		return e.countWhere(ctx, "count fans to retry", "fans", where, args)
	}
	var total int64
	for {
		fans, err := e.queryFans(ctx, `SELECT unionid, openid FROM fans WHERE `+where+` ORDER BY unionid LIMIT ?`, append(args, retryBatch)...)
		if err != nil || len(fans) == 0 {
			return total, err
		}
		var n int64
		err = e.withTx(ctx, "retry fans", func(tx *sqlTx) error {
			for _, fan := range fans {
				// Only a fan still failed: one registered meanwhile (by
				// another instance, say) keeps its pending_id.
				res, err := tx.ExecContext(ctx, `UPDATE fans SET state = 'new', queued_at = ?, queue_class = ?, updated_at = ? WHERE unionid = ? AND state = 'failed'`,
					now.UnixMilli(), QueueBulk, now.UnixMilli(), fan.UnionID)
				if err != nil {
					return dbError("retry fan", err)
				}
				if changed, err := res.RowsAffected(); err != nil || changed == 0 {
					if err != nil {
						return dbError("retry fan", err)
					}
					continue
				}
				n++
			}
			return nil
		})
		total += n
		if err != nil || len(fans) < retryBatch {
			return total, err
		}
	}
}
