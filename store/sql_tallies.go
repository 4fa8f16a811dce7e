package store

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The status counts come from the tallies table, which the triggers of
// migration 009 keep (see there for the sets), so that no read of
// /v1/status or /v1/quota scans a table of millions.

const hourMS = int64(time.Hour / time.Millisecond)

// tallySQL reads one tally (0 when the set never had a row).
const tallySQL = `(SELECT CAST(coalesce(sum(n), 0) AS BIGINT) FROM tallies WHERE name = ?)`

// liveAfterSQL counts the fans whose newest pending_id expires after a time
// t, given the arguments hour(t), t and the end of t's hour: the whole
// hours after t's from the tallies, and t's own hour from fans_live_until,
// a range of at most an hour's registrations.
const liveAfterSQL = `((SELECT CAST(coalesce(sum(n), 0) AS BIGINT) FROM tallies WHERE name = 'live_until' AND part > ?)
	+ (SELECT count(*) FROM fans WHERE live_until > ? AND live_until < ?))`

// liveAfterArgs are liveAfterSQL's arguments for t.
func liveAfterArgs(t time.Time) []any {
	ms := t.UnixMilli()
	h := ms / hourMS
	return []any{h, ms, (h + 1) * hourMS}
}

func (e *sqlEngine) pipelineStatus(ctx context.Context, now time.Time, expiringWithin time.Duration) (PipelineStatus, error) {
	var (
		s                     PipelineStatus
		liveNow, liveLater    int64
		everLive, fansPending int64
	)
	args := []any{"events.resolved", "events.pending", "events.failed", "events.unmatched", "fans.registered", "links", "links.active", "live_until"}
	args = append(args, liveAfterArgs(now)...)
	args = append(args, liveAfterArgs(now.Add(expiringWithin))...)
	err := e.read.QueryRowContext(ctx, `SELECT `+strings.Repeat(tallySQL+`, `, 8)+liveAfterSQL+`, `+liveAfterSQL+`,
		(SELECT CAST(coalesce(sum(n), 0) AS BIGINT) FROM tallies WHERE name LIKE 'queue.%')`, args...).Scan(
		&s.EventsResolved, &s.EventsPending, &s.EventsFailed, &s.EventsUnmatched,
		&s.FansRegistered, &s.LinksTotal, &s.LinksActive, &everLive, &liveNow, &liveLater, &fansPending)
	if err != nil {
		return s, dbError("pipeline status", err)
	}
	s.FansValid, s.FansExpiring, s.FansExpired = liveNow, liveNow-liveLater, everLive-liveNow
	s.FansQueued = fansPending
	s.FailureReasons = map[string]int64{}
	err = queryEach(ctx, e.read, "pipeline status", `SELECT reason, count(*) FROM events WHERE state = 'failed'
		GROUP BY reason ORDER BY count(*) DESC LIMIT 10`, func(r rowScanner) error {
		var (
			reason string
			n      int64
		)
		err := r.Scan(&reason, &n)
		s.FailureReasons[reason] = n
		return err
	})
	return s, err
}

func (e *sqlEngine) countFansExpiring(ctx context.Context, now time.Time, within time.Duration) (int64, error) {
	var n int64
	err := e.read.QueryRowContext(ctx, `SELECT `+liveAfterSQL+` - `+liveAfterSQL,
		append(liveAfterArgs(now), liveAfterArgs(now.Add(within))...)...).Scan(&n)
	return n, dbError("count expiring fans", err)
}

// queuedBy counts the registration queue by priority and class, in queue
// order: interactive first, then by priority, renewals before first
// registrations.
func (e *sqlEngine) queuedBy(ctx context.Context) ([]QueuedCount, error) {
	// queue.<class>, part = priority
	out, err := queryRows(ctx, e.read, "count the queue", `SELECT name, part, n FROM tallies WHERE name LIKE 'queue.%' AND n <> 0`,
		func(r rowScanner) (q QueuedCount, err error) {
			q.Class, err = scanTally(r, "queue.", &q.Priority, &q.Count)
			return q, err
		})
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if ai, bi := a.Class == QueueInteractive, b.Class == QueueInteractive; ai != bi {
			return ai
		}
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		return a.Class > b.Class
	})
	return out, err
}

// scanTally scans a row of a tally's name, part and count into part and n,
// and returns the number the name ends with after prefix.
func scanTally(r rowScanner, prefix string, part any, n *int64) (int, error) {
	var name string
	if err := r.Scan(&name, part, n); err != nil {
		return 0, err
	}
	k, err := strconv.Atoi(strings.TrimPrefix(name, prefix))
	if err != nil {
		return 0, fmt.Errorf("tally %q: %w", name, err)
	}
	return k, nil
}

// TallyDrift is a tally that differs from a recount of its set.
type TallyDrift struct {
	Name        string
	Part        int64
	Tally, Real int64
}

func (d TallyDrift) String() string {
	return fmt.Sprintf("%s[%d]: tally %d, recount %d", d.Name, d.Part, d.Tally, d.Real)
}

// recountSQL counts every tallied set afresh, as migration 009 defines them.
const recountSQL = `SELECT 'events.' || state, 0, count(*) FROM events GROUP BY state
	UNION ALL SELECT 'fans.' || state, 0, count(*) FROM fans GROUP BY state
	UNION ALL SELECT 'fans.unchecked', 0, count(*) FROM fans WHERE state = 'registered' AND checked_at IS NULL
	UNION ALL SELECT 'queue.' || queue_class, importance, count(*) FROM fans WHERE queued_at IS NOT NULL GROUP BY queue_class, importance
	UNION ALL SELECT 'live_until', live_until / 3600000, count(*) FROM fans WHERE live_until IS NOT NULL GROUP BY live_until / 3600000
	UNION ALL SELECT 'expiry.' || importance, live_until / 86400000, count(*) FROM fans
		WHERE live_until IS NOT NULL AND queued_at IS NULL AND state = 'registered' GROUP BY importance, live_until / 86400000
	UNION ALL SELECT 'links', 0, count(*) FROM links
	UNION ALL SELECT 'links.active', 0, count(*) FROM links WHERE active = 1
	UNION ALL SELECT 'live_until.wrong', 0, count(*) FROM fans f
		WHERE live_until IS DISTINCT FROM (SELECT max(expires_at) FROM fan_pending_ids p WHERE p.unionid = f.unionid)`

func (e *sqlEngine) checkTallies(ctx context.Context) ([]TallyDrift, error) {
	type key struct {
		name string
		part int64
	}
	read := func(query string) (map[key]int64, error) {
		m := map[key]int64{}
		err := queryEach(ctx, e.read, "check tallies", query, func(r rowScanner) error {
			var (
				k key
				n int64
			)
			if err := r.Scan(&k.name, &k.part, &n); err != nil {
				return err
			}
			if n != 0 {
				m[k] += n
			}
			return nil
		})
		return m, err
	}
	// Both reads in one statement would need one snapshot; on a quiet
	// database (the callers: tests, and Copy's destination) two are the
	// same.
	tallies, err := read(`SELECT name, part, n FROM tallies`)
	if err != nil {
		return nil, err
	}
	real, err := read(recountSQL)
	if err != nil {
		return nil, err
	}
	var out []TallyDrift
	for k, n := range real {
		if tallies[k] != n {
			out = append(out, TallyDrift{Name: k.name, Part: k.part, Tally: tallies[k], Real: n})
		}
	}
	for k, n := range tallies {
		if _, ok := real[k]; !ok {
			out = append(out, TallyDrift{Name: k.name, Part: k.part, Tally: n})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Name < out[j].Name || out[i].Name == out[j].Name && out[i].Part < out[j].Part
	})
	return out, nil
}

// expiringBy counts the registered fans not queued whose newest
// pending_id expires by the end of (now+within)'s UTC day, or has expired
// (a renewal overdue), by priority, highest first. Whole days: the tallies
// keep no finer split, so the count may take in fans that expire later on
// the last day.
func (e *sqlEngine) expiringBy(ctx context.Context, now time.Time, within time.Duration) ([]QueuedCount, error) {
	const dayMS = 24 * hourMS
	// expiry.<priority>, summed over the days; part is read as 0
	out, err := queryRows(ctx, e.read, "count expiring fans", `SELECT name, 0, CAST(sum(n) AS BIGINT) FROM tallies
		WHERE name LIKE 'expiry.%' AND part <= ? GROUP BY name HAVING sum(n) <> 0`,
		func(r rowScanner) (q QueuedCount, err error) {
			var part int64
			q.Class = QueueRenew
			q.Priority, err = scanTally(r, "expiry.", &part, &q.Count)
			return q, err
		}, now.Add(within).UnixMilli()/dayMS)
	sort.Slice(out, func(i, j int) bool { return out[i].Priority > out[j].Priority })
	return out, err
}
