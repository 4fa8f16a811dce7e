package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// withTx runs f in a write transaction (see begin) and commits.
func (e *sqlEngine) withTx(ctx context.Context, op string, f func(tx *sqlTx) error) (err error) {
	tx, err := e.begin(ctx)
	if err != nil {
		return dbError(op+": begin", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err := f(tx); err != nil {
		return err
	}
	return dbError(op+": commit", tx.Commit())
}

// execLocked runs one statement as a write transaction of its own and
// returns its error wrapped with op. A bare statement on the write pool
// would skip the PostgreSQL write lock, which every write to a tallied table
// (events, fans, links) must hold, so that the tally triggers never update
// the same rows from two transactions at once.
func (e *sqlEngine) execLocked(ctx context.Context, op, query string, args ...any) (res sql.Result, err error) {
	err = e.withTx(ctx, op, func(tx *sqlTx) error {
		res, err = tx.ExecContext(ctx, query, args...)
		return dbError(op, err)
	})
	return res, err
}

const linkColumns = `id, unionid, openid, pending_id, corp_id, external_userid, user_id, chat_id, active, matched_at, ended_at, end_reason`

type rowScanner interface{ Scan(dest ...any) error }

// scanOne reads a row of one column.
func scanOne[T any](r rowScanner) (v T, err error) {
	err = r.Scan(&v)
	return v, err
}

func scanLink(r rowScanner) (Link, error) {
	var (
		l       Link
		active  int
		matched int64
		ended   sql.NullInt64
	)
	if err := r.Scan(&l.ID, &l.UnionID, &l.OpenID, &l.PendingID, &l.CorpID, &l.ExternalUserID, &l.UserID,
		&l.ChatID, &active, &matched, &ended, &l.EndReason); err != nil {
		return Link{}, err
	}
	l.Active = active == 1
	l.MatchedAt = time.UnixMilli(matched).UTC()
	l.EndedAt = nullTime(ended)
	return l, nil
}

// upsertLink creates the link, or re-activates an ended one. It returns
// ok == false when an active link already existed: matching is idempotent.
// A created or re-activated link gets a link_created notification.
//
// A customer nobody holds any more (a removal overtook the lookup) gets its
// link created ended, with the removal's reason and no notification: the
// brand never hears of a link that is already over.
func upsertLink(ctx context.Context, tx *sqlTx, jobs jobInserter, l Link, nowMS int64) (Link, bool, error) {
	ok, reason, err := held(ctx, tx, l.CorpID, l.ExternalUserID)
	if err != nil {
		return Link{}, false, err
	}
	if !ok {
		_, err := tx.ExecContext(ctx, `INSERT INTO links (unionid, openid, pending_id, corp_id, external_userid, user_id, chat_id, active, matched_at, ended_at, end_reason, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?) ON CONFLICT (unionid, corp_id, external_userid) DO NOTHING`,
			l.UnionID, l.OpenID, l.PendingID, l.CorpID, l.ExternalUserID, l.UserID, l.ChatID, nowMS, nowMS, reason, nowMS)
		return Link{}, false, dbError("insert ended link", err)
	}
	row := tx.QueryRowContext(ctx, `INSERT INTO links (unionid, openid, pending_id, corp_id, external_userid, user_id, chat_id, active, matched_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)
		ON CONFLICT (unionid, corp_id, external_userid) DO UPDATE SET
			active = 1, ended_at = NULL, end_reason = '', pending_id = excluded.pending_id,
			user_id = excluded.user_id, chat_id = excluded.chat_id,
			matched_at = excluded.matched_at, updated_at = excluded.updated_at
		WHERE links.active = 0
		RETURNING `+linkColumns,
		l.UnionID, l.OpenID, l.PendingID, l.CorpID, l.ExternalUserID, l.UserID, l.ChatID, nowMS, nowMS)
	got, err := scanLink(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Link{}, false, nil
	}
	if err != nil {
		return Link{}, false, dbError("upsert link", err)
	}
	if err := addOutbox(ctx, tx, jobs, got, OutboxLinkCreated, nowMS); err != nil {
		return Link{}, false, err
	}
	return got, true, nil
}

// addOutbox queues a notification of a link change in the caller's
// transaction, and its delivery job when a webhook is configured.
func addOutbox(ctx context.Context, tx *sqlTx, jobs jobInserter, l Link, kind string, nowMS int64) error {
	snapshot, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("store: encode link: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (link_id, kind, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?)`,
		l.ID, kind, snapshot, nowMS, nowMS); err != nil {
		return dbError("insert outbox", err)
	}
	if err := jobs.notification(ctx, tx.Tx, l); err != nil {
		return dbError("enqueue notification jobs", err)
	}
	return nil
}

// recordResolutions implements engine: every resolution of the batch in one
// transaction, each inside a savepoint, so one that fails is rolled back
// alone (its caller gets the error in errs) and the others still commit.
func (e *sqlEngine) recordResolutions(ctx context.Context, jobs jobInserter, rs []Resolution, now time.Time) (out [][]Link, errs []error, err error) {
	out, errs = make([][]Link, len(rs)), make([]error, len(rs))
	err = e.withTx(ctx, "record resolutions", func(tx *sqlTx) error {
		for i, r := range rs {
			if _, err := tx.ExecContext(ctx, `SAVEPOINT resolution`); err != nil {
				return dbError("savepoint", err)
			}
			links, rerr := recordResolutionTx(ctx, tx, jobs, r, now)
			if rerr != nil {
				errs[i] = rerr
				if _, err := tx.ExecContext(ctx, `ROLLBACK TO resolution`); err != nil {
					return dbError("rollback to savepoint", err)
				}
			}
			if _, err := tx.ExecContext(ctx, `RELEASE resolution`); err != nil {
				return dbError("release savepoint", err)
			}
			out[i] = links
		}
		return nil
	})
	return out, errs, err
}

func recordResolutionTx(ctx context.Context, tx *sqlTx, jobs jobInserter, r Resolution, now time.Time) (links []Link, err error) {
	nowMS := now.UnixMilli()
	state := ResolutionResolved
	switch {
	case r.Failed:
		state = ResolutionFailed
	case r.PendingID == "":
		state = ResolutionUnmatched
	}
	var pending any
	if r.PendingID != "" {
		pending = r.PendingID
	}
	err = func() error {
		if !r.Failed {
			if err := holdResolved(ctx, tx, r, now); err != nil {
				return err
			}
		}
		// A failure never wipes a pending_id found earlier.
		if _, err := tx.ExecContext(ctx, `INSERT INTO resolutions (corp_id, external_userid, chat_id, user_id, pending_id, event_id, state, reason, resolved_at, expires_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (corp_id, external_userid, chat_id) DO UPDATE SET
				user_id = CASE WHEN excluded.user_id <> '' THEN excluded.user_id ELSE resolutions.user_id END,
				pending_id = CASE WHEN excluded.state = 'failed' THEN resolutions.pending_id ELSE excluded.pending_id END,
				expires_at = CASE WHEN excluded.state = 'failed' THEN resolutions.expires_at ELSE excluded.expires_at END,
				state = CASE WHEN excluded.state = 'failed' AND resolutions.pending_id IS NOT NULL THEN resolutions.state ELSE excluded.state END,
				event_id = excluded.event_id, reason = excluded.reason,
				resolved_at = excluded.resolved_at, updated_at = excluded.updated_at`,
			r.CorpID, r.ExternalUserID, r.ChatID, r.UserID, pending, nullInt(r.EventID), state, r.Reason,
			nowMS, now.Add(PendingIDLifetime).UnixMilli(), nowMS); err != nil {
			return dbError("upsert resolution", err)
		}
		if r.PendingID != "" {
			rows, err := tx.QueryContext(ctx, `SELECT f.unionid, f.openid FROM fan_pending_ids p JOIN fans f ON f.unionid = p.unionid
				WHERE p.pending_id = ? AND p.expires_at > ?`, r.PendingID, nowMS)
			if err != nil {
				return dbError("match resolution", err)
			}
			var fans []FanInput
			for rows.Next() {
				var f FanInput
				if err := rows.Scan(&f.UnionID, &f.OpenID); err != nil {
					rows.Close()
					return dbError("match resolution", err)
				}
				fans = append(fans, f)
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return dbError("match resolution", err)
			}
			matched := false
			for _, f := range fans {
				l, created, err := upsertLink(ctx, tx, jobs, Link{UnionID: f.UnionID, OpenID: f.OpenID, PendingID: r.PendingID,
					CorpID: r.CorpID, ExternalUserID: r.ExternalUserID, UserID: r.UserID, ChatID: r.ChatID}, nowMS)
				if err != nil {
					return err
				}
				matched = true
				if created {
					links = append(links, l)
				}
			}
			if matched {
				if _, err := tx.ExecContext(ctx, `UPDATE resolutions SET state = 'matched' WHERE corp_id = ? AND external_userid = ? AND chat_id = ?`,
					r.CorpID, r.ExternalUserID, r.ChatID); err != nil {
					return dbError("mark resolution matched", err)
				}
			}
		}
		if r.EventID > 0 {
			evState, reason := EventResolved, r.Reason
			switch {
			case r.Failed:
				evState = EventFailed
			case r.PendingID == "":
				evState = EventUnmatched
			}
			// A customer's event, once resolved, stays so.
			keep := `state = 'resolved' AND ? <> 'resolved'`
			if r.ChatID != "" {
				keep = `? = ''`
				// A chat event has one job per member; its state sums up
				// the members' resolutions: failed while any member failed
				// for good (so that retrying the reason re-drives it, every
				// member again, idempotently), else resolved once any
				// member resolved, else unmatched.
				err := tx.QueryRowContext(ctx, `SELECT state, reason FROM resolutions WHERE event_id = ?
					ORDER BY CASE state WHEN 'failed' THEN 0 WHEN 'unmatched' THEN 2 ELSE 1 END LIMIT 1`, r.EventID).Scan(&evState, &reason)
				if err != nil {
					return dbError("sum up chat event", err)
				}
				if evState == ResolutionMatched {
					evState = EventResolved
				}
				if evState != EventFailed {
					reason = ""
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE events SET state = ?, reason = ?, updated_at = ? WHERE id = ? AND NOT (`+keep+`)`,
				evState, reason, nowMS, r.EventID, evState); err != nil {
				return dbError("update event state", err)
			}
		}
		return nil
	}()
	return links, err
}

// holdResolved records the holder the add behind r made: SaveEvent did
// already, so this changes nothing, except for an add stored before follows
// were kept or a resolution recorded without an event (then it holds from
// now).
func holdResolved(ctx context.Context, tx *sqlTx, r Resolution, now time.Time) error {
	var ev *Event
	if r.EventID > 0 {
		stored, err := eventTx(ctx, tx, r.EventID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		ev = stored
	}
	if ev == nil {
		ev = &Event{Kind: KindAddExternalContact, CorpID: r.CorpID, ExternalUserID: r.ExternalUserID, UserID: r.UserID,
			CreateTime: now, ReceivedAt: now}
		if r.ChatID != "" {
			ev.Kind, ev.ExternalUserID, ev.ChatID, ev.Members = KindAddMember, "", r.ChatID, []string{r.ExternalUserID}
		}
	}
	var mine []followChange
	for _, c := range followChanges(ev, r.EventID, ev.ReceivedAt) {
		if c.externalUserID == r.ExternalUserID { // a chat event lists every member
			mine = append(mine, c)
		}
	}
	return applyEventFollows(ctx, tx, &Event{Kind: ev.Kind}, r.EventID, now.UnixMilli(), mine)
}

func nullInt(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}

func (e *sqlEngine) endLinks(ctx context.Context, jobs jobInserter, el EndLink, now time.Time) (links []Link, err error) {
	nowMS := now.UnixMilli()
	err = e.withTx(ctx, "end links", func(tx *sqlTx) error {
		// Without an event the removal happens now: of the chat's members,
		// of the chat, of one staff member's follow, or (no staff member
		// named) of the customer altogether.
		ev := &Event{Kind: KindDelFollowUser, CorpID: el.CorpID, ExternalUserID: el.ExternalUserID, UserID: el.UserID,
			ChatID: el.ChatID, Members: el.Members, CreateTime: now, ReceivedAt: now}
		switch {
		case el.ChatID != "" && len(el.Members) > 0:
			ev.Kind, ev.ExternalUserID = KindDelMember, ""
		case el.ChatID != "":
			ev.Kind, ev.ExternalUserID = KindChatDismiss, ""
		}
		if el.EventID > 0 {
			stored, err := eventTx(ctx, tx, el.EventID)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			if stored != nil {
				ev = stored
			}
		}
		changes := followChanges(ev, el.EventID, ev.ReceivedAt)
		reason := ev.Kind
		if el.EventID == 0 && el.UserID == "" && el.ChatID == "" {
			reason = "removed"
			if err := dropHolders(ctx, tx, el.CorpID, el.ExternalUserID, reason, nowMS); err != nil {
				return err
			}
			changes = nil
		}
		// SaveEvent applied a stored removal already; applying it again
		// changes nothing, and covers a removal stored before follows were
		// kept.
		if err := applyEventFollows(ctx, tx, ev, el.EventID, nowMS, changes); err != nil {
			return err
		}
		customers := ev.Members
		switch {
		case ev.ExternalUserID != "":
			customers = []string{ev.ExternalUserID}
		case ev.Kind == KindChatDismiss:
			if customers, err = chatMembers(ctx, tx, ev.CorpID, ev.ChatID); err != nil {
				return err
			}
		}
		for _, ext := range customers {
			ok, _, err := held(ctx, tx, ev.CorpID, ext)
			if err != nil {
				return err
			}
			if ok {
				continue // another member or chat still holds the customer
			}
			ended, err := endCustomerLinks(ctx, tx, ev.CorpID, ext, reason, nowMS)
			if err != nil {
				return err
			}
			links = append(links, ended...)
		}
		for _, l := range links {
			if err := addOutbox(ctx, tx, jobs, l, OutboxLinkEnded, nowMS); err != nil {
				return err
			}
		}
		if el.EventID > 0 {
			if _, err := tx.ExecContext(ctx, `UPDATE events SET state = 'resolved', updated_at = ? WHERE id = ?`, nowMS, el.EventID); err != nil {
				return dbError("update event state", err)
			}
		}
		return nil
	})
	return links, err
}

// endCustomerLinks marks the active links of a customer ended.
func endCustomerLinks(ctx context.Context, tx *sqlTx, corpID, externalUserID, reason string, nowMS int64) ([]Link, error) {
	rows, err := tx.QueryContext(ctx, `UPDATE links SET active = 0, ended_at = ?, end_reason = ?, updated_at = ?
		WHERE corp_id = ? AND external_userid = ? AND active = 1 RETURNING `+linkColumns,
		nowMS, reason, nowMS, corpID, externalUserID)
	if err != nil {
		return nil, dbError("end links", err)
	}
	var links []Link
	for rows.Next() {
		l, err := scanLink(rows)
		if err != nil {
			rows.Close()
			return nil, dbError("end links", err)
		}
		links = append(links, l)
	}
	return links, dbError("end links", errors.Join(rows.Err(), rows.Close()))
}

// eventTx reads the fields of a stored event that say what it changes.
func eventTx(ctx context.Context, tx *sqlTx, id int64) (*Event, error) {
	var (
		ev         = Event{ID: id}
		members    sql.NullString
		createTime sql.NullInt64
		receivedAt int64
	)
	err := tx.QueryRowContext(ctx, `SELECT kind, corp_id, user_id, external_userid, chat_id, members, create_time, source, received_at
		FROM events WHERE id = ?`, id).Scan(&ev.Kind, &ev.CorpID, &ev.UserID, &ev.ExternalUserID, &ev.ChatID,
		&members, &createTime, &ev.Source, &receivedAt)
	if err != nil {
		return nil, dbError(fmt.Sprintf("read event %d", id), err)
	}
	if members.Valid {
		if err := json.Unmarshal([]byte(members.String), &ev.Members); err != nil {
			return nil, fmt.Errorf("store: read event %d: members: %w", id, err)
		}
	}
	if createTime.Valid {
		ev.CreateTime = time.Unix(createTime.Int64, 0).UTC()
	}
	ev.ReceivedAt = time.UnixMilli(receivedAt).UTC()
	return &ev, nil
}

func (e *sqlEngine) recordFanPendingID(ctx context.Context, jobs jobInserter, unionID, pendingID string, now time.Time) (links []Link, err error) {
	nowMS := now.UnixMilli()
	err = e.withTx(ctx, "record fan pending_id", func(tx *sqlTx) error {
		var (
			openID    string
			liveUntil sql.NullInt64
		)
		if err := tx.QueryRowContext(ctx, `SELECT openid, live_until FROM fans WHERE unionid = ?`, unionID).Scan(&openID, &liveUntil); err != nil {
			return dbError("find fan", err)
		}
		// A fan renewed after its id lapsed is checked again: a dealer who
		// added it in the gap got no pending_id that matches, and only
		// unionid_to_external_userid can find that customer.
		recheck := ""
		if liveUntil.Valid && liveUntil.Int64 <= nowMS {
			recheck = "checked_at = NULL, "
		}
		if err := observeRenewal(ctx, tx, unionID, pendingID, nowMS); err != nil {
			return err
		}
		// Re-registering may return an id we hold already; whether its
		// lifetime restarts is unknown (§9 #10), so a live id keeps its first
		// expiry. An id we had recorded as expired but WeCom hands out again
		// is live again from now.
		if _, err := tx.ExecContext(ctx, `INSERT INTO fan_pending_ids (pending_id, unionid, issued_at, expires_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (pending_id) DO UPDATE SET issued_at = excluded.issued_at, expires_at = excluded.expires_at
			WHERE fan_pending_ids.expires_at <= excluded.issued_at`, pendingID, unionID, nowMS, now.Add(PendingIDLifetime).UnixMilli()); err != nil {
			return dbError("insert pending_id", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE fans SET `+recheck+`state = 'registered', registered_at = ?, last_error = '', attempts = attempts + 1, queued_at = NULL, updated_at = ?
			WHERE unionid = ?`, nowMS, nowMS, unionID); err != nil {
			return dbError("mark fan registered", err)
		}
		rows, err := tx.QueryContext(ctx, `SELECT corp_id, external_userid, chat_id, user_id FROM resolutions
			WHERE pending_id = ? AND expires_at > ?`, pendingID, nowMS)
		if err != nil {
			return dbError("match fan", err)
		}
		var found []Link
		for rows.Next() {
			l := Link{UnionID: unionID, OpenID: openID, PendingID: pendingID}
			if err := rows.Scan(&l.CorpID, &l.ExternalUserID, &l.ChatID, &l.UserID); err != nil {
				rows.Close()
				return dbError("match fan", err)
			}
			found = append(found, l)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return dbError("match fan", err)
		}
		for _, l := range found {
			got, created, err := upsertLink(ctx, tx, jobs, l, nowMS)
			if err != nil {
				return err
			}
			if created {
				links = append(links, got)
			}
		}
		if len(found) > 0 {
			// Only the live resolutions linked above; an expired one with the
			// same pending_id matched nothing.
			if _, err := tx.ExecContext(ctx, `UPDATE resolutions SET state = 'matched', updated_at = ? WHERE pending_id = ? AND expires_at > ?`,
				nowMS, pendingID, nowMS); err != nil {
				return dbError("mark resolutions matched", err)
			}
		}
		if err := jobs.pendingID(ctx, tx.Tx, FanInput{UnionID: unionID, OpenID: openID}); err != nil {
			return dbError("enqueue pending_id jobs", err)
		}
		return nil
	})
	return links, err
}

// Outcomes of a re-registration made while the fan held a live pending_id
// (renewal_observations.outcome).
const (
	renewalSameID = "same"
	renewalNewID  = "new"
)

// observeRenewal counts what WeCom answered when the fan still held a live
// pending_id: the id it held, or a new one (§9 #10). A fan holding none (a
// first registration, or a renewal after expiry) teaches nothing.
func observeRenewal(ctx context.Context, tx *sqlTx, unionID, pendingID string, nowMS int64) error {
	var live, same int64
	if err := tx.QueryRowContext(ctx, `SELECT count(*), COALESCE(sum(CASE WHEN pending_id = ? THEN 1 ELSE 0 END), 0)
		FROM fan_pending_ids WHERE unionid = ? AND expires_at > ?`, pendingID, unionID, nowMS).Scan(&live, &same); err != nil {
		return dbError("read live pending_ids", err)
	}
	if live == 0 {
		return nil
	}
	outcome := renewalNewID
	if same > 0 {
		outcome = renewalSameID
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO renewal_observations (outcome, observed, last_at) VALUES (?, 1, ?)
		ON CONFLICT (outcome) DO UPDATE SET observed = renewal_observations.observed + 1, last_at = excluded.last_at`, outcome, nowMS)
	return dbError("count renewal observation", err)
}

func (e *sqlEngine) renewalObservations(ctx context.Context) (RenewalObservations, error) {
	var o RenewalObservations
	err := queryEach(ctx, e.read, "renewal observations", `SELECT outcome, observed FROM renewal_observations`, func(r rowScanner) error {
		var (
			outcome string
			n       int64
		)
		if err := r.Scan(&outcome, &n); err != nil {
			return err
		}
		switch outcome {
		case renewalSameID:
			o.SameID = n
		case renewalNewID:
			o.NewID = n
		}
		return nil
	})
	return o, err
}

func (e *sqlEngine) linkExisting(ctx context.Context, jobs jobInserter, unionID string, found []CorpCustomer, sweepID int64, now time.Time) (links []Link, err error) {
	nowMS := now.UnixMilli()
	err = e.withTx(ctx, "link existing", func(tx *sqlTx) error {
		var (
			openID, pendingID string
			checked           sql.NullInt64
			place             = sweepKey{unionID: unionID} // in a sweep's order, before this check links the fan
		)
		err := tx.QueryRowContext(ctx, `SELECT f.openid, COALESCE((SELECT pending_id FROM fan_pending_ids p
			WHERE p.unionid = f.unionid AND p.expires_at > ? ORDER BY issued_at DESC LIMIT 1), ''), f.checked_at,
			`+activeLink+`, f.importance, f.active_day, f.created_at
			FROM fans f WHERE f.unionid = ?`, nowMS, unionID).Scan(&openID, &pendingID, &checked, &place.linked, &place.importance, &place.day, &place.created)
		if err != nil {
			return dbError("find fan", err)
		}
		if sweepID > 0 {
			if err := moveSweepCursor(ctx, tx, sweepID, place); err != nil {
				return err
			}
		}
		for _, c := range found {
			if err := holdExisting(ctx, tx, c, nowMS); err != nil {
				return err
			}
			l, created, err := upsertLink(ctx, tx, jobs, Link{UnionID: unionID, OpenID: openID, PendingID: pendingID,
				CorpID: c.CorpID, ExternalUserID: c.ExternalUserID}, nowMS)
			if err != nil {
				return err
			}
			if created {
				links = append(links, l)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE fans SET checked_at = ? WHERE unionid = ?`, nowMS, unionID); err != nil {
			return dbError("mark fan checked", err)
		}
		switch {
		case sweepID > 0:
			if _, err := tx.ExecContext(ctx, `UPDATE reconcile_sweeps SET checked = checked + 1, linked = linked + ? WHERE id = ?`,
				len(links), sweepID); err != nil {
				return dbError("count sweep", err)
			}
		case !checked.Valid:
			// A running sweep leaves the fans never checked to the new
			// checks; such a fan of the sweep counts as its work.
			if _, err := tx.ExecContext(ctx, `UPDATE reconcile_sweeps SET checked = checked + 1, linked = linked + ?
				WHERE finished_at IS NULL AND registered_before >= ?`, len(links), place.created); err != nil {
				return dbError("count sweep", err)
			}
		}
		return nil
	})
	return links, err
}

func (e *sqlEngine) updateFan(ctx context.Context, unionID string, u FanUpdate, now time.Time) error {
	sets, args := []string{"updated_at = ?"}, []any{now.UnixMilli()}
	if u.Priority != nil {
		sets, args = append(sets, "importance = ?"), append(args, *u.Priority)
	}
	if u.LastActive != nil {
		ms := u.LastActive.UnixMilli()
		sets, args = append(sets, "last_active_at = ?", "active_day = ?"), append(args, ms, activeDay(ms))
	}
	res, err := e.execLocked(ctx, "update fan", `UPDATE fans SET `+strings.Join(sets, ", ")+` WHERE unionid = ?`, append(args, unionID)...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return dbError("update fan", err)
	} else if n == 0 {
		return fmt.Errorf("%w: fan", ErrNotFound)
	}
	return nil
}

func (e *sqlEngine) failFan(ctx context.Context, unionID, reason string, now time.Time) error {
	_, err := e.execLocked(ctx, "fail fan", `UPDATE fans SET state = 'failed', last_error = ?, attempts = attempts + 1, queued_at = NULL, updated_at = ? WHERE unionid = ?`,
		reason, now.UnixMilli(), unionID)
	return err
}

// registerChunk bounds the fans one statement writes: far below both
// engines' limits on bound parameters (10 per fan).
const registerChunk = 500

func (e *sqlEngine) registerFans(ctx context.Context, fans []FanInput, opts RegisterOpts, now time.Time) (res RegisterResult, err error) {
	nowMS := now.UnixMilli()
	// A fan listed twice is stored once, with its last openid; the repeats
	// count as skipped, as a second request for the same fan would.
	last := make(map[string]int, len(fans))
	for i, f := range fans {
		last[f.UnionID] = i
	}
	uniq := make([]FanInput, 0, len(last))
	for i, f := range fans {
		if last[f.UnionID] == i {
			uniq = append(uniq, f)
		}
	}
	res.Skipped = len(fans) - len(uniq)
	err = e.withTx(ctx, "register fans", func(tx *sqlTx) error {
		for lo := 0; lo < len(uniq); lo += registerChunk {
			chunk := uniq[lo:min(lo+registerChunk, len(uniq))]
			known, err := knownFans(ctx, tx, chunk, nowMS)
			if err != nil {
				return err
			}
			// A new fan is queued by its insert, with its priority: one
			// statement writes a chunk of an import of new fans.
			q, args := manyRows(`INSERT INTO fans (unionid, openid, priority, importance, queued_at, queue_class, last_active_at, active_day, created_at, updated_at) VALUES `, len(chunk), 10,
				func(i int) []any {
					f := chunk[i]
					var queued any
					if _, old := known[f.UnionID]; !old && !opts.NoJob {
						queued = nowMS
					}
					importance := f.Priority
					if importance == 0 {
						importance = DefaultFanPriority
					}
					var active any
					var day int64
					if !f.LastActive.IsZero() {
						ms := f.LastActive.UnixMilli()
						active, day = ms, activeDay(ms)
					}
					return []any{f.UnionID, f.OpenID, -opts.Priority, importance, queued, opts.Priority, active, day, nowMS, nowMS}
				})
			// A known fan keeps the newest last-active time it was given: none
			// or an older one (a stale import) leaves it.
			if _, err := tx.ExecContext(ctx, q+` ON CONFLICT (unionid) DO UPDATE SET openid = excluded.openid, updated_at = excluded.updated_at,
				last_active_at = CASE WHEN fans.last_active_at IS NULL OR excluded.last_active_at > fans.last_active_at THEN excluded.last_active_at ELSE fans.last_active_at END,
				active_day = CASE WHEN fans.last_active_at IS NULL OR excluded.last_active_at > fans.last_active_at THEN excluded.active_day ELSE fans.active_day END`,
				args...); err != nil {
				return dbError("upsert fans", err)
			}
			var old, todo []FanInput
			for _, f := range chunk {
				live, ok := known[f.UnionID]
				switch {
				case !ok:
					res.Queued++
					continue
				case live && !opts.Renew:
					res.Skipped++
				default:
					todo = append(todo, f)
				}
				old = append(old, f)
			}
			if err := setPriorities(ctx, tx, old); err != nil {
				return err
			}
			if opts.NoJob || len(todo) == 0 {
				res.Queued += len(todo)
				continue
			}
			n, err := queueFans(ctx, tx, todo, opts.Priority, nowMS)
			if err != nil {
				return err
			}
			res.Queued += n
			res.Skipped += len(todo) - n
		}
		return nil
	})
	return res, err
}

// queueColumns are what nextFans reads of a queued fan.
const queueColumns = `SELECT unionid, openid, importance, queue_class, queued_at FROM fans WHERE queued_at IS NOT NULL AND `

func (e *sqlEngine) nextFans(ctx context.Context, limit int) ([]QueuedFan, error) {
	// Two ordered index scans (fans_queue_interactive, fans_queue) rather
	// than one ORDER BY over a CASE, which no index serves. Recency is by
	// day so that queued_at still orders the fans of a day: first come,
	// first served.
	out, err := e.scanQueued(ctx, queueColumns+`queue_class = ? ORDER BY queued_at LIMIT ?`, QueueInteractive, limit)
	if err != nil || len(out) == limit {
		return out, err
	}
	rest, err := e.scanQueued(ctx, queueColumns+`queue_class <> ? ORDER BY importance DESC, queue_class DESC, active_day DESC, queued_at LIMIT ?`,
		QueueInteractive, limit-len(out))
	return append(out, rest...), err
}

func (e *sqlEngine) scanQueued(ctx context.Context, query string, args ...any) ([]QueuedFan, error) {
	return queryRows(ctx, e.read, "next fans", query, func(r rowScanner) (QueuedFan, error) {
		var (
			f  QueuedFan
			at int64
		)
		err := r.Scan(&f.UnionID, &f.OpenID, &f.Priority, &f.Class, &at)
		f.QueuedAt = time.UnixMilli(at)
		return f, err
	}, args...)
}

func (e *sqlEngine) requeueFan(ctx context.Context, unionID, reason string, now time.Time) error {
	_, err := e.execLocked(ctx, "requeue fan", `UPDATE fans SET queued_at = ?, last_error = ?, attempts = attempts + 1, updated_at = ?
		WHERE unionid = ? AND queued_at IS NOT NULL`, now.UnixMilli(), reason, now.UnixMilli(), unionID)
	return err
}

func (e *sqlEngine) queuedFans(ctx context.Context) (map[int]int64, error) {
	out := map[int]int64{}
	err := queryEach(ctx, e.read, "count queued fans", `SELECT queue_class, count(*) FROM fans WHERE queued_at IS NOT NULL GROUP BY queue_class`,
		func(r rowScanner) error {
			var (
				c int
				n int64
			)
			err := r.Scan(&c, &n)
			out[c] = n
			return err
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// queueFans puts fans in the registration queue at class and returns how
// many joined it. A fan already queued keeps its place and counts as not
// joining, but moves up to class if that is more urgent (an interactive
// request for a fan queued in bulk).
func queueFans(ctx context.Context, tx *sqlTx, fans []FanInput, class int, nowMS int64) (int, error) {
	ids := make([]any, len(fans))
	for i, f := range fans {
		ids[i] = f.UnionID
	}
	in := func(int) []any { return ids }
	q, args := manyRows(`UPDATE fans SET queued_at = ?, queue_class = ? WHERE queued_at IS NULL AND unionid IN `, 1, len(ids), in)
	res, err := tx.ExecContext(ctx, q, append([]any{nowMS, class}, args...)...)
	if err != nil {
		return 0, dbError("queue fans", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, dbError("queue fans", err)
	}
	if int(n) < len(fans) {
		q, args := manyRows(`UPDATE fans SET queue_class = ? WHERE queue_class > ? AND queued_at IS NOT NULL AND unionid IN `, 1, len(ids), in)
		if _, err := tx.ExecContext(ctx, q, append([]any{class, class}, args...)...); err != nil {
			return 0, dbError("queue fans", err)
		}
	}
	return int(n), nil
}

// setPriorities writes the priorities the fans were given (0: keep the
// fan's, the column default for a new one), one statement per value.
func setPriorities(ctx context.Context, tx *sqlTx, fans []FanInput) error {
	byPriority := map[int][]any{}
	for _, f := range fans {
		if f.Priority != 0 {
			byPriority[f.Priority] = append(byPriority[f.Priority], f.UnionID)
		}
	}
	for p, ids := range byPriority {
		q, args := manyRows(`UPDATE fans SET importance = ? WHERE unionid IN `, 1, len(ids), func(int) []any { return ids })
		if _, err := tx.ExecContext(ctx, q, append([]any{p}, args...)...); err != nil {
			return dbError("set fan priorities", err)
		}
	}
	return nil
}

// knownFans returns which of fans are stored already, each with whether
// it holds a live pending_id.
func knownFans(ctx context.Context, tx *sqlTx, fans []FanInput, nowMS int64) (map[string]bool, error) {
	q, args := manyRows(`SELECT f.unionid, EXISTS (SELECT 1 FROM fan_pending_ids p WHERE p.unionid = f.unionid AND p.expires_at > ?)
		FROM fans f WHERE f.unionid IN `, 1, len(fans),
		func(int) []any {
			out := make([]any, len(fans))
			for i, f := range fans {
				out[i] = f.UnionID
			}
			return out
		})
	known := make(map[string]bool)
	err := queryEach(ctx, tx, "known fans", q, func(r rowScanner) error {
		var (
			u    string
			live bool
		)
		err := r.Scan(&u, &live)
		known[u] = live
		return err
	}, append([]any{nowMS}, args...)...)
	if err != nil {
		return nil, err
	}
	return known, nil
}

// manyRows appends n groups of width placeholders, "(?, ?), (?, ?)", to
// prefix and returns the statement and the arguments row(i) gives for each
// group.
func manyRows(prefix string, n, width int, row func(i int) []any) (string, []any) {
	var b strings.Builder
	b.WriteString(prefix)
	group := "(" + strings.TrimSuffix(strings.Repeat("?, ", width), ", ") + ")"
	args := make([]any, 0, n*width)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(group)
		args = append(args, row(i)...)
	}
	return b.String(), args
}

func (e *sqlEngine) queryLinks(ctx context.Context, query string, args ...any) ([]Link, error) {
	return queryRows(ctx, e.read, "query links", query, scanLink, args...)
}

func (e *sqlEngine) findFan(ctx context.Context, unionID string, now time.Time) (*FanDetail, error) {
	var (
		f       FanDetail
		created int64
		active  sql.NullInt64
	)
	err := e.read.QueryRowContext(ctx, `SELECT unionid, openid, importance, last_active_at, state, last_error, created_at FROM fans WHERE unionid = ?`, unionID).
		Scan(&f.UnionID, &f.OpenID, &f.Priority, &active, &f.State, &f.LastError, &created)
	if err != nil {
		return nil, dbError("find fan", err)
	}
	f.CreatedAt = time.UnixMilli(created).UTC()
	f.LastActiveAt = nullTime(active)
	if f.PendingIDs, err = e.fanPendingIDs(ctx, unionID); err != nil {
		return nil, err
	}
	for _, p := range f.PendingIDs {
		if p.ExpiresAt.After(now) {
			f.PendingID = p.PendingID
			exp := p.ExpiresAt
			f.ExpiresAt = &exp
			break
		}
	}
	f.Links, err = e.queryLinks(ctx, `SELECT `+linkColumns+` FROM links WHERE unionid = ? ORDER BY id DESC`, unionID)
	if f.Links == nil {
		f.Links = []Link{}
	}
	return &f, err
}

func (e *sqlEngine) findLinks(ctx context.Context, f LinkFilter) ([]Link, error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) { where = append(where, cond); args = append(args, v) }
	if f.UnionID != "" {
		add("unionid = ?", f.UnionID)
	}
	if f.CorpID != "" {
		add("corp_id = ?", f.CorpID)
	}
	if f.ExternalUserID != "" {
		add("external_userid = ?", f.ExternalUserID)
	}
	if !f.Since.IsZero() {
		add("matched_at >= ?", f.Since.UnixMilli())
	}
	if f.BeforeID > 0 {
		add("id < ?", f.BeforeID)
	}
	q := `SELECT ` + linkColumns + ` FROM links`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	// Newest first by id: ids grow with time, and id makes the cursor stable.
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, f.Limit)
	return e.queryLinks(ctx, q, args...)
}

func (e *sqlEngine) findCustomer(ctx context.Context, corpID, externalUserID string) (*CustomerDetail, error) {
	c := &CustomerDetail{CorpID: corpID, ExternalUserID: externalUserID, Resolutions: []Resolution{}}
	err := queryEach(ctx, e.read, "find customer", `SELECT chat_id, user_id, COALESCE(pending_id, ''), COALESCE(event_id, 0), state, reason, resolved_at
		FROM resolutions WHERE corp_id = ? AND external_userid = ? ORDER BY id`, func(row rowScanner) error {
		r := Resolution{CorpID: corpID, ExternalUserID: externalUserID}
		var at int64
		if err := row.Scan(&r.ChatID, &r.UserID, &r.PendingID, &r.EventID, &r.State, &r.Reason, &at); err != nil {
			return err
		}
		r.ResolvedAt = time.UnixMilli(at).UTC()
		c.Resolutions = append(c.Resolutions, r)
		return nil
	}, corpID, externalUserID)
	if err != nil {
		return nil, err
	}
	c.Links, err = e.queryLinks(ctx, `SELECT `+linkColumns+` FROM links WHERE corp_id = ? AND external_userid = ? ORDER BY id DESC`, corpID, externalUserID)
	if err != nil {
		return nil, err
	}
	if c.Links == nil {
		c.Links = []Link{}
	}
	if len(c.Resolutions) == 0 && len(c.Links) == 0 {
		return nil, fmt.Errorf("%w: customer", ErrNotFound)
	}
	return c, nil
}

func (e *sqlEngine) fansToRenew(ctx context.Context, before, now time.Time, limit int) ([]FanInput, error) {
	// A fan is renewed once per issued id: WeCom may answer a renewal with the
	// id the fan already holds, whose expiry does not move (§9 #10), and
	// asking again before it expires would only spend quota.
	// Highest priority first, then the fans last active on a later day
	// (unknown last); among equals, unmatched fans (a linked one may still
	// be added by another dealer, an unmatched one is all we have), then the
	// soonest to expire. The newest id was issued a lifetime before
	// live_until; a later registered_at means WeCom answered since with an
	// id already held.
	return queryRows(ctx, e.read, "fans to renew", `SELECT f.unionid, f.openid, f.importance FROM fans f
		WHERE f.live_until < ? AND f.state = 'registered' AND f.queued_at IS NULL
		AND (f.live_until <= ? OR f.registered_at IS NULL OR f.registered_at <= f.live_until - ?)
		ORDER BY f.importance DESC, f.active_day DESC, EXISTS (SELECT 1 FROM links l WHERE l.unionid = f.unionid AND l.active = 1), f.live_until LIMIT ?`,
		func(r rowScanner) (f FanInput, err error) {
			err = r.Scan(&f.UnionID, &f.OpenID, &f.Priority)
			return f, err
		},
		before.UnixMilli(), now.UnixMilli(), PendingIDLifetime.Milliseconds(), limit)
}

func (e *sqlEngine) strandedFans(ctx context.Context, before time.Time, limit int) ([]FanInput, error) {
	return queryRows(ctx, e.read, "stranded fans", `SELECT unionid, openid, importance FROM fans`+e.d.indexedBy("fans_stranded")+`
		WHERE state = 'new' AND queued_at IS NULL AND updated_at < ? ORDER BY updated_at LIMIT ?`,
		func(r rowScanner) (f FanInput, err error) {
			err = r.Scan(&f.UnionID, &f.OpenID, &f.Priority)
			return f, err
		}, before.UnixMilli(), limit)
}

func (e *sqlEngine) hasAvailableJobs(ctx context.Context, queue string, atLeast int) (bool, error) {
	var n int
	// River keeps future jobs 'scheduled' until they are due, so 'available'
	// means ready and not yet fetched. The LIMIT bounds the count's cost.
	err := e.read.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM river_job WHERE queue = ? AND state = 'available' LIMIT ?) AS j`,
		queue, atLeast).Scan(&n)
	return n >= atLeast, dbError("available jobs", err)
}

const outboxColumns = `id, link_id, kind, payload, attempts, last_error, created_at`

func scanOutbox(r rowScanner) (*OutboxItem, error) {
	var (
		o        OutboxItem
		snapshot []byte
		created  int64
	)
	if err := r.Scan(&o.ID, &o.LinkID, &o.Kind, &snapshot, &o.Attempts, &o.LastError, &created); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(snapshot, &o.Link); err != nil {
		return nil, fmt.Errorf("store: decode outbox %d: %w", o.ID, err)
	}
	o.OccurredAt = time.UnixMilli(created).UTC()
	return &o, nil
}

func (e *sqlEngine) nextOutbox(ctx context.Context, linkID int64) (*OutboxItem, error) {
	o, err := scanOutbox(e.read.QueryRowContext(ctx, `SELECT `+outboxColumns+` FROM outbox
		WHERE link_id = ? AND delivered_at IS NULL ORDER BY id LIMIT 1`, linkID))
	return o, dbError("next outbox", err)
}

// claimOutbox and markOutbox run as write transactions (begin), so that on
// PostgreSQL too a claim never overlaps a delivery being marked: a claim
// that waited for the mark of the row it picked would otherwise find that
// row delivered and report the link claimed.
func (e *sqlEngine) claimOutbox(ctx context.Context, linkID int64, now time.Time, lease time.Duration) (o *OutboxItem, err error) {
	err = e.withTx(ctx, "claim outbox", func(tx *sqlTx) error {
		// Only the head of the link's queue can be claimed, and only while
		// free: one statement, so two senders never both get it.
		var err error
		claim := now.Add(lease).UnixMilli()
		o, err = scanOutbox(tx.QueryRowContext(ctx, `UPDATE outbox SET claimed_until = ?
			WHERE id = (SELECT id FROM outbox WHERE link_id = ? AND delivered_at IS NULL ORDER BY id LIMIT 1)
			AND delivered_at IS NULL AND (claimed_until IS NULL OR claimed_until <= ?) RETURNING `+outboxColumns,
			claim, linkID, now.UnixMilli()))
		if err == nil {
			o.claim = claim
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return dbError("claim outbox", err)
		}
		var pending bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM outbox WHERE link_id = ? AND delivered_at IS NULL)`,
			linkID).Scan(&pending); err != nil {
			return dbError("claim outbox", err)
		}
		if !pending {
			return fmt.Errorf("%w: next outbox", ErrNotFound)
		}
		return fmt.Errorf("%w: notifications of link %d", ErrClaimed, linkID)
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}

func (e *sqlEngine) markOutbox(ctx context.Context, id, claim int64, errMsg string, now time.Time) error {
	return e.withTx(ctx, "mark outbox", func(tx *sqlTx) error {
		var err error
		if errMsg == "" {
			// Delivered is delivered, whoever holds the claim now.
			_, err = tx.ExecContext(ctx, `UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = '', claimed_until = NULL WHERE id = ?`, now.UnixMilli(), id)
		} else {
			var held any // an unclaimed item (0) matches only an unclaimed row
			if claim != 0 {
				held = claim
			}
			_, err = tx.ExecContext(ctx, `UPDATE outbox SET attempts = attempts + 1, last_error = ?, claimed_until = NULL
				WHERE id = ? AND claimed_until IS NOT DISTINCT FROM ?`, errMsg, id, held)
		}
		return dbError("mark outbox", err)
	})
}
