package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The queries behind FanStory, CustomerStory, Activity and OutboxHealth.
// Each one reads by a key or a short index range (a fan's unionid, a
// customer's (corp_id, external_userid), a pending_id, event ids, the last
// day of received_at or matched_at, the undelivered part of the outbox), so
// the status page's refreshes and searches never scan a table.

// inList is "?, ?, ?" for n arguments.
func inList(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// storyFan reads a fan and its pending_ids, newest first.
func (e *sqlEngine) storyFan(ctx context.Context, unionID string) (StoryFan, error) {
	var (
		f               StoryFan
		created         int64
		checked, active sql.NullInt64
	)
	err := e.read.QueryRowContext(ctx, `SELECT unionid, openid, importance, state, last_error, created_at, checked_at, last_active_at
		FROM fans WHERE unionid = ?`, unionID).Scan(&f.UnionID, &f.OpenID, &f.Priority, &f.State, &f.LastError, &created, &checked, &active)
	if err != nil {
		return f, dbError("story fan", err)
	}
	f.CreatedAt = time.UnixMilli(created).UTC()
	f.CheckedAt, f.LastActiveAt = nullTime(checked), nullTime(active)
	f.PendingIDs, err = e.fanPendingIDs(ctx, unionID)
	return f, err
}

// fanPendingIDs reads every pending_id issued for a fan, newest first: one
// per renewal, a handful a year.
func (e *sqlEngine) fanPendingIDs(ctx context.Context, unionID string) ([]FanPendingID, error) {
	out, err := queryRows(ctx, e.read, "fan pending_ids", `SELECT pending_id, issued_at, expires_at FROM fan_pending_ids
		WHERE unionid = ? ORDER BY issued_at DESC`, func(r rowScanner) (FanPendingID, error) {
		var (
			p               FanPendingID
			issued, expires int64
		)
		err := r.Scan(&p.PendingID, &issued, &expires)
		p.IssuedAt, p.ExpiresAt = time.UnixMilli(issued).UTC(), time.UnixMilli(expires).UTC()
		return p, err
	}, unionID)
	if out == nil && err == nil {
		out = []FanPendingID{} // a fan without ids lists none, not null
	}
	return out, err
}

// storyCustomer reads a customer's lookups, holders and the events they
// name; found is false when the store holds neither lookup nor holder.
func (e *sqlEngine) storyCustomer(ctx context.Context, corpID, externalUserID string) (c StoryCustomer, found bool, err error) {
	c = StoryCustomer{CorpID: corpID, ExternalUserID: externalUserID, Lookups: []Lookup{}, Follows: []Follow{}, Events: []StoryEvent{}}
	rows, err := e.read.QueryContext(ctx, `SELECT chat_id, user_id, COALESCE(pending_id, ''), COALESCE(event_id, 0), state, reason,
			resolved_at, expires_at
		FROM resolutions WHERE corp_id = ? AND external_userid = ? ORDER BY id DESC LIMIT ?`, corpID, externalUserID, StoryLimit)
	if err != nil {
		return c, false, dbError("story lookups", err)
	}
	var eventIDs []int64
	for rows.Next() {
		l := Lookup{Resolution: Resolution{CorpID: corpID, ExternalUserID: externalUserID}}
		var (
			at      int64
			expires sql.NullInt64
		)
		if err := rows.Scan(&l.ChatID, &l.UserID, &l.PendingID, &l.EventID, &l.State, &l.Reason, &at, &expires); err != nil {
			rows.Close()
			return c, false, dbError("story lookups", err)
		}
		l.ResolvedAt = time.UnixMilli(at).UTC()
		l.ExpiresAt = nullTime(expires)
		c.Lookups = append(c.Lookups, l)
		eventIDs = append(eventIDs, l.EventID)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return c, false, dbError("story lookups", err)
	}

	rows, err = e.read.QueryContext(ctx, `SELECT user_id, chat_id, active, source, changed_at, event_id FROM follows
		WHERE corp_id = ? AND external_userid = ? ORDER BY changed_at DESC, event_id DESC LIMIT ?`, corpID, externalUserID, StoryLimit)
	if err != nil {
		return c, false, dbError("story follows", err)
	}
	for rows.Next() {
		var (
			f       Follow
			active  int
			changed int64
		)
		if err := rows.Scan(&f.UserID, &f.ChatID, &active, &f.Source, &changed, &f.EventID); err != nil {
			rows.Close()
			return c, false, dbError("story follows", err)
		}
		f.Active, f.ChangedAt = active == 1, time.Unix(changed, 0).UTC()
		c.Follows = append(c.Follows, f)
		eventIDs = append(eventIDs, f.EventID)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return c, false, dbError("story follows", err)
	}

	c.Events, err = e.storyEvents(ctx, eventIDs)
	return c, len(c.Lookups) > 0 || len(c.Follows) > 0, err
}

// storyEvents reads the events with these ids (0s and repeats ignored),
// oldest first. Pruned events are simply missing.
func (e *sqlEngine) storyEvents(ctx context.Context, ids []int64) ([]StoryEvent, error) {
	ids = slices.DeleteFunc(ids, func(id int64) bool { return id == 0 })
	slices.Sort(ids)
	ids = slices.Compact(ids)
	out := []StoryEvent{}
	if len(ids) == 0 {
		return out, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	err := queryEach(ctx, e.read, "story events", `SELECT id, kind, user_id, chat_id, state, reason, create_time, received_at
		FROM events WHERE id IN (`+inList(len(ids))+`) ORDER BY id`, func(r rowScanner) error {
		var (
			ev       StoryEvent
			create   sql.NullInt64
			received int64
		)
		if err := r.Scan(&ev.ID, &ev.Kind, &ev.UserID, &ev.ChatID, &ev.State, &ev.Reason, &create, &received); err != nil {
			return err
		}
		if create.Valid {
			t := time.Unix(create.Int64, 0).UTC()
			ev.CreateTime = &t
		}
		ev.ReceivedAt = time.UnixMilli(received).UTC()
		out = append(out, ev)
		return nil
	}, args...)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// storyCustomers reads the customers, at most StoryLimit of them, in the
// order given.
func (e *sqlEngine) storyCustomers(ctx context.Context, keys []CorpCustomer) ([]StoryCustomer, error) {
	out := []StoryCustomer{}
	seen := map[CorpCustomer]bool{}
	for _, k := range keys {
		if seen[k] || len(out) == StoryLimit {
			continue
		}
		seen[k] = true
		c, _, err := e.storyCustomer(ctx, k.CorpID, k.ExternalUserID)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// fanStory implements DB.FanStory: the fan, its links, and the customers
// looked up to one of its pending_ids or linked to it.
func (e *sqlEngine) fanStory(ctx context.Context, unionID string) (*Story, error) {
	f, err := e.storyFan(ctx, unionID)
	if err != nil {
		return nil, err
	}
	s := &Story{Fans: []StoryFan{f}}
	if s.Links, err = e.queryLinks(ctx, `SELECT `+linkColumns+` FROM links WHERE unionid = ? ORDER BY id DESC LIMIT ?`,
		unionID, StoryLimit); err != nil {
		return nil, err
	}
	var keys []CorpCustomer
	for _, l := range s.Links {
		keys = append(keys, CorpCustomer{CorpID: l.CorpID, ExternalUserID: l.ExternalUserID})
	}
	if len(f.PendingIDs) > 0 {
		args := make([]any, 0, len(f.PendingIDs)+1)
		for _, p := range f.PendingIDs {
			args = append(args, p.PendingID)
		}
		resolved, err := queryRows(ctx, e.read, "story resolutions of fan", `SELECT corp_id, external_userid FROM resolutions
			WHERE pending_id IN (`+inList(len(f.PendingIDs))+`) ORDER BY id DESC LIMIT ?`,
			func(r rowScanner) (k CorpCustomer, err error) {
				err = r.Scan(&k.CorpID, &k.ExternalUserID)
				return k, err
			}, append(args, StoryLimit)...)
		if err != nil {
			return nil, err
		}
		keys = append(keys, resolved...)
	}
	s.Customers, err = e.storyCustomers(ctx, keys)
	return s, err
}

// customerStory implements DB.CustomerStory: the customer, its links, and
// the fans holding one of its lookups' pending_ids or linked to it.
func (e *sqlEngine) customerStory(ctx context.Context, corpID, externalUserID string) (*Story, error) {
	c, found, err := e.storyCustomer(ctx, corpID, externalUserID)
	if err != nil {
		return nil, err
	}
	s := &Story{Customers: []StoryCustomer{c}}
	if s.Links, err = e.queryLinks(ctx, `SELECT `+linkColumns+` FROM links WHERE corp_id = ? AND external_userid = ?
		ORDER BY id DESC LIMIT ?`, corpID, externalUserID, StoryLimit); err != nil {
		return nil, err
	}
	if !found && len(s.Links) == 0 {
		return nil, fmt.Errorf("%w: customer", ErrNotFound)
	}
	var unionIDs []string
	for _, l := range s.Links {
		unionIDs = append(unionIDs, l.UnionID)
	}
	var pendingIDs []any
	for _, l := range c.Lookups {
		if l.PendingID != "" {
			pendingIDs = append(pendingIDs, l.PendingID)
		}
	}
	if len(pendingIDs) > 0 {
		holders, err := queryRows(ctx, e.read, "story fans of customer",
			`SELECT unionid FROM fan_pending_ids WHERE pending_id IN (`+inList(len(pendingIDs))+`)`, scanOne[string], pendingIDs...)
		if err != nil {
			return nil, err
		}
		unionIDs = append(unionIDs, holders...)
	}
	slices.Sort(unionIDs)
	for _, u := range slices.Compact(unionIDs) {
		if len(s.Fans) == StoryLimit {
			break
		}
		f, err := e.storyFan(ctx, u)
		if err != nil {
			return nil, err
		}
		s.Fans = append(s.Fans, f)
	}
	return s, nil
}

// activity implements DB.Activity: stored events per minute and links
// made per hour, keyed by the bucket's start in unix ms, from the indexes on events.received_at and
// links.matched_at.
func (e *sqlEngine) activity(ctx context.Context, minutesSince, hoursSince time.Time) (minutes, hours map[int64]int64, err error) {
	buckets := func(op, query string, since time.Time, width int64) (map[int64]int64, error) {
		out := map[int64]int64{}
		err := queryEach(ctx, e.read, op, query, func(r rowScanner) error {
			var b, n int64
			err := r.Scan(&b, &n)
			out[b*width] = n
			return err
		}, since.UnixMilli())
		if err != nil {
			return nil, err
		}
		return out, nil
	}
	minutes, err = buckets("events per minute",
		`SELECT received_at / 60000, count(*) FROM events WHERE received_at >= ? GROUP BY 1`, minutesSince, 60000)
	if err != nil {
		return nil, nil, err
	}
	hours, err = buckets("links per hour",
		`SELECT matched_at / 3600000, count(*) FROM links WHERE matched_at >= ? GROUP BY 1`, hoursSince, 3600000)
	return minutes, hours, err
}

// outboxHealth implements DB.OutboxHealth. Counting stops at
// OutboxCountLimit undelivered rows, so a webhook down for days costs no
// more to report than one down for minutes.
func (e *sqlEngine) outboxHealth(ctx context.Context) (OutboxHealth, error) {
	var (
		h      OutboxHealth
		oldest sql.NullInt64
		last   sql.NullInt64
	)
	err := e.read.QueryRowContext(ctx, `SELECT count(*), COALESCE(sum(CASE WHEN attempts > 0 THEN 1 ELSE 0 END), 0)
		FROM (SELECT attempts FROM outbox WHERE delivered_at IS NULL LIMIT ?) AS u`, OutboxCountLimit+1).Scan(&h.Undelivered, &h.Failing)
	if err != nil {
		return h, dbError("outbox health", err)
	}
	h.More = h.Undelivered > OutboxCountLimit
	h.Undelivered = min(h.Undelivered, OutboxCountLimit)
	// next_attempt_at is the row's creation time (nothing moves it), and
	// outbox_pending_due indexes it for the undelivered rows.
	if err := e.read.QueryRowContext(ctx, `SELECT min(next_attempt_at) FROM outbox WHERE delivered_at IS NULL`).Scan(&oldest); err != nil {
		return h, dbError("outbox health", err)
	}
	h.OldestUndelivered = nullTime(oldest)
	err = e.read.QueryRowContext(ctx, `SELECT last_error FROM outbox WHERE delivered_at IS NULL AND attempts > 0
		ORDER BY next_attempt_at DESC LIMIT 1`).Scan(&h.LastError)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return h, dbError("outbox health", err)
	}
	// The newest delivered row, found from the newest row backwards: only
	// undelivered rows lie in between.
	err = e.read.QueryRowContext(ctx, `SELECT delivered_at FROM outbox WHERE delivered_at IS NOT NULL ORDER BY id DESC LIMIT 1`).Scan(&last)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return h, dbError("outbox health", err)
	}
	h.LastDelivered = nullTime(last)
	return h, nil
}
