package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// sweepFans is the WHERE clause of a sweep's fans still to check, given the
// arguments registered_before and started_at. Linked fans are swept too
// (after the unmatched ones): a fan linked at one dealer may have been added
// by another while nobody heard.
const sweepFans = `f.state = 'registered' AND f.created_at <= ? AND (f.checked_at IS NULL OR f.checked_at < ?)`

func (e *sqlEngine) startSweep(ctx context.Context, reason string, registeredBefore, now time.Time) (s *Sweep, started bool, err error) {
	if s, err := e.latestSweep(ctx); err != nil || s.Running() {
		return s, false, err
	}
	// Counted once, before the write transaction: at ten million fans the
	// count takes seconds, which the writers should not wait for. A fan
	// checked meanwhile is still counted; Remaining is an estimate anyway.
	var toCheck int64
	if err := e.read.QueryRowContext(ctx, `SELECT count(*) FROM fans f WHERE `+sweepFans, registeredBefore.UnixMilli(), now.UnixMilli()).Scan(&toCheck); err != nil {
		return nil, false, dbError("count sweep", err)
	}
	err = e.withTx(ctx, "start sweep", func(tx *sqlTx) error {
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM reconcile_sweeps WHERE finished_at IS NULL ORDER BY id DESC LIMIT 1`).Scan(&id)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return dbError("find running sweep", err)
		}
		started = true
		_, err = tx.ExecContext(ctx, `INSERT INTO reconcile_sweeps (reason, registered_before, started_at, to_check) VALUES (?, ?, ?, ?)`,
			reason, registeredBefore.UnixMilli(), now.UnixMilli(), toCheck)
		return dbError("insert sweep", err)
	})
	if err != nil {
		return nil, false, err
	}
	s, err = e.latestSweep(ctx)
	return s, started, err
}

func (e *sqlEngine) latestSweep(ctx context.Context) (*Sweep, error) {
	var (
		s                 Sweep
		before, startedAt int64
		finished, toCheck sql.NullInt64
		cursor            nullSweepKey
	)
	err := e.read.QueryRowContext(ctx, `SELECT id, reason, registered_before, started_at, finished_at, checked, linked, to_check, `+cursorColumns+`
		FROM reconcile_sweeps ORDER BY id DESC LIMIT 1`).Scan(append([]any{&s.ID, &s.Reason, &before, &startedAt, &finished, &s.Checked, &s.Linked, &toCheck},
		cursor.dest()...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, dbError("latest sweep", err)
	}
	s.RegisteredBefore, s.StartedAt = time.UnixMilli(before).UTC(), time.UnixMilli(startedAt).UTC()
	if s.FinishedAt = nullTime(finished); s.FinishedAt != nil {
		return &s, nil
	}
	s.cursor = cursor.key()
	if toCheck.Valid {
		s.Remaining = max(0, toCheck.Int64-s.Checked)
		return &s, nil
	}
	// A sweep an older version started: counted on every read.
	err = e.read.QueryRowContext(ctx, `SELECT count(*) FROM fans f WHERE `+sweepFans, before, startedAt).Scan(&s.Remaining)
	return &s, dbError("count sweep", err)
}

func (e *sqlEngine) fansToCheck(ctx context.Context, limit int, includeNew bool) (FansToCheck, error) {
	var out FansToCheck
	var err error
	if includeNew {
		out.New, err = e.queryFans(ctx, `SELECT unionid, openid FROM fans`+e.d.indexedBy("fans_check_order")+` WHERE checked_at IS NULL AND state = 'registered'
			ORDER BY priority DESC, importance DESC, active_day DESC, created_at DESC, unionid DESC LIMIT ?`, limit)
		if err != nil {
			return out, err
		}
	}
	s, err := e.latestSweep(ctx)
	if err != nil || !s.Running() {
		return out, err
	}
	out.Sweep = s
	if room := limit - len(out.New); room > 0 {
		// With includeNew, fans never checked came in New (all of them,
		// since New left room): the sweep lists only the others.
		out.Swept, err = e.sweepNext(ctx, s, includeNew, room)
	}
	return out, err
}

// activeLink is true when the fan f holds an active link.
const activeLink = `EXISTS (SELECT 1 FROM links l WHERE l.unionid = f.unionid AND l.active = 1)`

// sweepNext lists up to limit fans the sweep s has still to check, in its
// order. It walks fans_sweep from the cursor, in the unlinked part, then
// the linked; only when that finds too few does it sort every fan left,
// which also finds those that moved behind the cursor. So the sweep ends
// (a list shorter than limit) only once nobody is left.
func (e *sqlEngine) sweepNext(ctx context.Context, s *Sweep, includeNew bool, limit int) ([]FanInput, error) {
	cond := sweepFans
	if includeNew {
		// Fans never checked are listed as new, all of them.
		cond += ` AND f.checked_at IS NOT NULL`
	}
	args := []any{s.RegisteredBefore.UnixMilli(), s.StartedAt.UnixMilli()}
	walk := func(linked bool, from *sweepKey, n int) ([]FanInput, error) {
		q := `SELECT f.unionid, f.openid FROM fans f` + e.d.indexedBy("fans_sweep") + ` WHERE ` + cond + ` AND `
		if !linked {
			q += `NOT `
		}
		q += activeLink
		a := append([]any{}, args...)
		if from != nil {
			q += ` AND (f.importance, f.active_day, f.created_at, f.unionid) < (?, ?, ?, ?)`
			a = append(a, from.importance, from.day, from.created, from.unionID)
		}
		q += ` ORDER BY f.importance DESC, f.active_day DESC, f.created_at DESC, f.unionid DESC LIMIT ?`
		return e.queryFans(ctx, q, append(a, n)...)
	}
	from, linked := s.cursor, false
	if from != nil {
		linked = from.linked
	}
	fans, err := walk(linked, from, limit)
	if err == nil && len(fans) < limit && !linked {
		var more []FanInput
		more, err = walk(true, nil, limit-len(fans))
		fans = append(fans, more...)
	}
	if err != nil || len(fans) == limit {
		return fans, err
	}
	return e.queryFans(ctx, `SELECT f.unionid, f.openid FROM fans f WHERE `+cond+`
		ORDER BY `+activeLink+`, f.importance DESC, f.active_day DESC, f.created_at DESC, f.unionid DESC LIMIT ?`, append(args, limit)...)
}

func (e *sqlEngine) queryFans(ctx context.Context, query string, args ...any) ([]FanInput, error) {
	return queryRows(ctx, e.read, "query fans", query, func(r rowScanner) (f FanInput, err error) {
		err = r.Scan(&f.UnionID, &f.OpenID)
		return f, err
	}, args...)
}

func (e *sqlEngine) finishSweep(ctx context.Context, id int64, now time.Time) error {
	_, err := e.write.ExecContext(ctx, `UPDATE reconcile_sweeps SET finished_at = ? WHERE id = ? AND finished_at IS NULL`, now.UnixMilli(), id)
	return dbError("finish sweep", err)
}

func (e *sqlEngine) heartbeat(ctx context.Context, instance string, now time.Time) (last time.Time, err error) {
	nowMS := now.UnixMilli()
	err = e.withTx(ctx, "heartbeat", func(tx *sqlTx) error {
		var seen sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT max(seen_at) FROM heartbeats`).Scan(&seen); err != nil {
			return dbError("read heartbeats", err)
		}
		if seen.Valid {
			last = time.UnixMilli(seen.Int64).UTC()
		}
		// Instances not seen for a day are forgotten.
		if _, err := tx.ExecContext(ctx, `DELETE FROM heartbeats WHERE seen_at < ?`, now.Add(-24*time.Hour).UnixMilli()); err != nil {
			return dbError("prune heartbeats", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO heartbeats (instance, seen_at) VALUES (?, ?)
			ON CONFLICT (instance) DO UPDATE SET seen_at = excluded.seen_at`, instance, nowMS)
		return dbError("write heartbeat", err)
	})
	return last, err
}

func (e *sqlEngine) backlog(ctx context.Context, after time.Time) (b Backlog, err error) {
	if b.QueuedBy, err = e.queuedBy(ctx); err != nil {
		return b, err
	}
	b.Queued = map[int]int64{}
	for _, q := range b.QueuedBy {
		b.Queued[q.Class] += q.Count
	}
	if after.IsZero() {
		err = e.read.QueryRowContext(ctx, `SELECT `+tallySQL, "fans.unchecked").Scan(&b.Unchecked)
		return b, dbError("backlog", err)
	}
	// While a sweep runs, only the fans it does not cover: a count, as the
	// sweep's own Remaining is.
	err = e.read.QueryRowContext(ctx, `SELECT count(*) FROM fans WHERE checked_at IS NULL AND state = 'registered' AND created_at > ?`,
		after.UnixMilli()).Scan(&b.Unchecked)
	return b, dbError("backlog", err)
}

// cursorColumns are a sweep's cursor in reconcile_sweeps, as nullSweepKey
// scans them.
const cursorColumns = `cursor_linked, cursor_importance, cursor_day, cursor_created, cursor_unionid`

// nullSweepKey scans cursorColumns, all NULL before the sweep's first check.
type nullSweepKey struct {
	linked, importance, day, created sql.NullInt64
	unionID                          sql.NullString
}

func (n *nullSweepKey) dest() []any {
	return []any{&n.linked, &n.importance, &n.day, &n.created, &n.unionID}
}

// key is the cursor, nil if none.
func (n *nullSweepKey) key() *sweepKey {
	if !n.unionID.Valid {
		return nil
	}
	return &sweepKey{linked: n.linked.Int64 == 1, importance: n.importance.Int64, day: n.day.Int64, created: n.created.Int64, unionID: n.unionID.String}
}

// moveSweepCursor moves the sweep's cursor to k, a fan's place, unless the
// cursor is past it already (a fan checked out of order, or one whose
// place changed since it was listed).
func moveSweepCursor(ctx context.Context, tx *sqlTx, sweepID int64, k sweepKey) error {
	var cur nullSweepKey
	err := tx.QueryRowContext(ctx, `SELECT `+cursorColumns+` FROM reconcile_sweeps WHERE id = ?`, sweepID).Scan(cur.dest()...)
	if err != nil {
		return dbError("read sweep cursor", err)
	}
	if c := cur.key(); c != nil && !k.after(*c) {
		return nil
	}
	_, err = tx.ExecContext(ctx, `UPDATE reconcile_sweeps SET cursor_linked = ?, cursor_importance = ?, cursor_day = ?, cursor_created = ?, cursor_unionid = ? WHERE id = ?`,
		boolInt(k.linked), k.importance, k.day, k.created, k.unionID, sweepID)
	return dbError("move sweep cursor", err)
}
