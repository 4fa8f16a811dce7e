package pipeline

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
)

// Forecast is what the quota allows and what waits for it: the basis of
// GET /v1/quota.
type Forecast struct {
	// Pending and Existing are the unionid_to_pending_id and
	// unionid_to_external_userid windows (nil without a limiter).
	Pending, Existing []quota.Usage
	// LivePendingIDs counts fans holding a live pending_id, and
	// ExpiringWithin7Days those whose newest one expires within 7 days.
	LivePendingIDs, ExpiringWithin7Days int64
	// Sustainable is how many fans the pending_id quota keeps live for good
	// when each is renewed as Renewal says, RenewBefore ahead of its 90
	// days or at its expiry (0: no limit).
	Sustainable int64
	// ExpiringUnrenewed is how many fans whose newest pending_id expires
	// within 7 days (or expired, waiting for renewal) the quota cannot renew
	// within those 7 days, at least: after the interactive registrations,
	// renewals and first registrations take the quota by priority, so these
	// are the lowest-priority ones.
	ExpiringUnrenewed int64
	// Renewal is when renewals start, and the observations that decided it.
	Renewal RenewalPolicy
	// OverCapacity is how many of the live and queued fans the quota cannot
	// keep live (LivePendingIDs plus the registrations queued, less
	// Sustainable): the lowest-priority ones, renewed last, expire.
	OverCapacity int64
	// Registrations is the registration backlog by class (interactive,
	// bulk, renewal), each done when the last of its fans is.
	Registrations []BacklogItem
	// ByPriority is the backlog other than interactive, by the fans'
	// priority, highest first: the order the quota is spent in.
	ByPriority []PriorityBacklog
	// Checks is the unionid_to_external_userid backlog: fans never
	// checked, then the running sweep's.
	Checks BacklogItem
}

// BacklogItem is queued work and when the quota lets it finish, counting
// everything ahead of it (zero Done when nothing waits).
type BacklogItem struct {
	Name  string
	Count int64
	// Done is the time the quota lets the last of it, and everything
	// ahead of it, be called.
	Done time.Time
}

// PriorityBacklog is the queued fans of one priority and when the quota
// lets the last of them, and everything ahead of them, be registered.
type PriorityBacklog struct {
	Priority int
	Count    int64
	Done     time.Time
}

type forecastStore interface {
	// UpdateFan changes a fan's priority or last-active time.
	UpdateFan(ctx context.Context, unionID string, u store.FanUpdate) error
	// Backlog counts the registration queue by class and the unchecked fans
	// created after after.
	Backlog(ctx context.Context, after time.Time) (store.Backlog, error)
	// ExpiringByPriority counts, by priority, the registered fans not
	// queued whose newest pending_id expires within the given time or has
	// expired.
	ExpiringByPriority(ctx context.Context, within time.Duration) ([]store.QueuedCount, error)
}

// Forecast reports the quota windows, live fans and the backlog with the
// times the quota lets it finish.
func (p *Pipeline) Forecast(ctx context.Context) (Forecast, error) {
	ps, err := p.cfg.Store.PipelineStatus(ctx, forecastExpiring)
	if err != nil {
		return Forecast{}, err
	}
	return p.forecast(ctx, ps)
}

// forecastExpiring is the horizon of Forecast.ExpiringWithin7Days.
const forecastExpiring = 7 * 24 * time.Hour

// forecast is Forecast on pipeline counters already read with the
// forecastExpiring horizon.
func (p *Pipeline) forecast(ctx context.Context, ps store.PipelineStatus) (Forecast, error) {
	now := p.cfg.Now()
	var f Forecast
	if p.cfg.Quota != nil {
		f.Pending = p.cfg.Quota.Usage()
	}
	if p.cfg.ExistingQuota != nil {
		f.Existing = p.cfg.ExistingQuota.Usage()
	}
	f.LivePendingIDs, f.ExpiringWithin7Days = ps.FansValid, ps.FansExpiring
	pol, err := renewalPolicy(ctx, p.cfg, p.cfg.Store)
	if err != nil {
		return f, err
	}
	f.Renewal = pol
	f.Sustainable = sustainable(f.Pending, store.PendingIDLifetime-pol.RenewBefore)

	sweep, err := p.cfg.Store.LatestSweep(ctx)
	if err != nil {
		return f, err
	}
	var after time.Time // a running sweep counts the unchecked fans it covers
	if sweep.Running() {
		after = sweep.RegisteredBefore
	}
	b, err := p.cfg.Store.Backlog(ctx, after)
	if err != nil {
		return f, err
	}
	// Walk the queue in its order, keeping when each class's last fan and
	// each priority's are reached.
	var ahead int64
	last := map[int]int64{} // class → ahead at its last fan
	for _, q := range b.QueuedBy {
		ahead += q.Count
		last[q.Class] = ahead
		if q.Class == store.QueueInteractive {
			continue
		}
		if n := len(f.ByPriority); n > 0 && f.ByPriority[n-1].Priority == q.Priority {
			f.ByPriority[n-1].Count += q.Count
			f.ByPriority[n-1].Done = doneAt(now, f.Pending, ahead, q.Count)
			continue
		}
		f.ByPriority = append(f.ByPriority, PriorityBacklog{Priority: q.Priority, Count: q.Count, Done: doneAt(now, f.Pending, ahead, q.Count)})
	}
	for _, q := range []struct {
		name  string
		class int
	}{{"interactive", store.QueueInteractive}, {"bulk", store.QueueBulk}, {"renewal", store.QueueRenew}} {
		n := b.Queued[q.class]
		f.Registrations = append(f.Registrations, BacklogItem{Name: q.name, Count: n, Done: doneAt(now, f.Pending, last[q.class], n)})
	}
	if f.Sustainable > 0 {
		f.OverCapacity = max(f.LivePendingIDs+ahead-f.Sustainable, 0)
	}
	expiring, err := p.cfg.Store.ExpiringByPriority(ctx, forecastExpiring)
	if err != nil {
		return f, err
	}
	f.ExpiringUnrenewed = unrenewed(quota.CallsWithin(f.Pending, forecastExpiring), b.QueuedBy, expiring)
	checks := b.Unchecked
	if sweep.Running() {
		checks += sweep.Remaining
	}
	f.Checks = BacklogItem{Name: "checks", Count: checks, Done: doneAt(now, f.Existing, checks, checks)}
	return f, nil
}

// doneAt is when total calls are allowed from now, zero when n is.
func doneAt(now time.Time, us []quota.Usage, total, n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return now.Add(quota.TimeFor(us, total))
}

// sustainable is how many fans renewed every cycle the windows keep live:
// each costs one call per cycle, so the tightest of limit × cycle/length.
func sustainable(us []quota.Usage, cycle time.Duration) int64 {
	var best int64
	for _, u := range us {
		if u.Length <= 0 || u.Limit <= 0 {
			continue
		}
		n := int64(float64(u.Limit) * float64(cycle) / float64(u.Length))
		if best == 0 || n < best {
			best = n
		}
	}
	return best
}

// UpdateFan changes a fan's priority (store.MinFanPriority to
// store.MaxFanPriority) or last-active time: its later registrations,
// renewals and checks go by them, and a queued fan moves at once.
func (p *Pipeline) UpdateFan(ctx context.Context, unionID string, u store.FanUpdate) error {
	return p.cfg.Store.UpdateFan(ctx, unionID, u)
}

// unrenewed is how many renewals (queued, or to come as expiring) calls
// cannot reach when spent in queue order: interactive registrations first,
// then by priority, renewals before first registrations at each.
func unrenewed(calls int64, queued, expiring []store.QueuedCount) int64 {
	type level struct{ renew, bulk int64 }
	byPriority := map[int]*level{}
	at := func(p int) *level {
		if byPriority[p] == nil {
			byPriority[p] = &level{}
		}
		return byPriority[p]
	}
	for _, q := range queued {
		switch q.Class {
		case store.QueueInteractive:
			calls -= q.Count
		case store.QueueRenew:
			at(q.Priority).renew += q.Count
		default:
			at(q.Priority).bulk += q.Count
		}
	}
	for _, e := range expiring {
		at(e.Priority).renew += e.Count
	}
	priorities := slices.Sorted(maps.Keys(byPriority))
	var short int64
	for _, p := range slices.Backward(priorities) {
		l := byPriority[p]
		calls = max(calls, 0)
		short += max(l.renew-calls, 0)
		calls -= l.renew + l.bulk
	}
	return short
}
