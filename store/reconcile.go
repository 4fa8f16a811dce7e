package store

import (
	"context"
	"fmt"
	"time"
)

// Sweep reasons.
const (
	// SweepRequested: an operator asked (POST /v1/reconcile, pendinglink reconcile).
	SweepRequested = "requested"
	// SweepDowntime: a start found that no instance had been running for a while.
	SweepDowntime = "downtime"
)

// Sweep is a reconcile sweep: the registered fans created at or before
// RegisteredBefore are checked against unionid_to_external_userid once
// more, those without an active link first, then by priority, the day last
// active and newest first.
type Sweep struct {
	ID               int64      `json:"id"`
	Reason           string     `json:"reason"`
	RegisteredBefore time.Time  `json:"registered_before"`
	StartedAt        time.Time  `json:"started_at"`
	FinishedAt       *time.Time `json:"finished_at,omitempty"`
	// Checked counts fans checked so far, Linked the links that made.
	Checked int64 `json:"checked"`
	Linked  int64 `json:"linked"`
	// Remaining estimates the fans still to check (0 once finished): those
	// to check when the sweep started less Checked. A fan that becomes
	// registered again meanwhile is not in it, a fan deleted still is; the
	// sweep ends when no fan is left, whatever Remaining says.
	Remaining int64 `json:"remaining"`

	// cursor is the place of the sweep's last checked fan, nil before the
	// first.
	cursor *sweepKey
}

// sweepKey is a fan's place in a sweep's order: without an active link
// first, then by priority, the day last active, the time stored and the
// unionid, each highest first.
type sweepKey struct {
	linked     bool
	importance int64
	day        int64
	created    int64
	unionID    string
}

// after reports whether k comes after o in the sweep's order.
func (k sweepKey) after(o sweepKey) bool {
	switch {
	case k.linked != o.linked:
		return k.linked
	case k.importance != o.importance:
		return k.importance < o.importance
	case k.day != o.day:
		return k.day < o.day
	case k.created != o.created:
		return k.created < o.created
	}
	return k.unionID < o.unionID
}

// Running reports whether the sweep has not finished.
func (s *Sweep) Running() bool { return s != nil && s.FinishedAt == nil }

// FansToCheck is what the reconcile job checks next.
type FansToCheck struct {
	// New are registered fans never checked: interactive first, then by
	// priority, the day last active, and newest first.
	New []FanInput
	// Sweep is the running sweep (nil if none) and Swept its next fans.
	Sweep *Sweep
	Swept []FanInput
}

// StartSweep starts a reconcile sweep of the fans registered before
// registeredBefore (the zero time means now). If one is running already it
// is returned instead, with started == false: sweeps do not stack.
func (db *DB) StartSweep(ctx context.Context, reason string, registeredBefore time.Time) (s *Sweep, started bool, err error) {
	now := db.cfg.Now()
	if registeredBefore.IsZero() || registeredBefore.After(now) {
		registeredBefore = now
	}
	return db.eng.startSweep(ctx, reason, registeredBefore, now)
}

// LatestSweep returns the newest sweep with its progress, or nil if there
// has been none.
func (db *DB) LatestSweep(ctx context.Context) (*Sweep, error) {
	return db.eng.latestSweep(ctx)
}

// NextFansToCheck returns up to limit fans to check: never-checked ones
// first, then (if limit leaves room) the running sweep's.
func (db *DB) NextFansToCheck(ctx context.Context, limit int, includeNew bool) (FansToCheck, error) {
	if limit <= 0 {
		return FansToCheck{}, nil
	}
	return db.eng.fansToCheck(ctx, limit, includeNew)
}

// RecordCheck stores what unionid_to_external_userid answered for a fan:
// it links the fan to every customer found (see LinkExisting), marks the
// fan checked, and counts it in sweep sweepID (0: none). Returns
// ErrNotFound for an unknown fan.
func (db *DB) RecordCheck(ctx context.Context, unionID string, found []CorpCustomer, sweepID int64) ([]Link, error) {
	return db.eng.linkExisting(ctx, db.jobs(), unionID, found, sweepID, db.cfg.Now())
}

// FinishSweep marks a sweep finished.
func (db *DB) FinishSweep(ctx context.Context, id int64) error {
	return db.eng.finishSweep(ctx, id, db.cfg.Now())
}

// Heartbeat records that instance is alive now and returns when any
// instance was last seen alive before this call (the zero time if never).
// A start that finds a long gap knows callbacks may have been lost.
func (db *DB) Heartbeat(ctx context.Context, instance string) (time.Time, error) {
	if instance == "" {
		return time.Time{}, fmt.Errorf("%w: empty instance name", ErrInvalid)
	}
	return db.eng.heartbeat(ctx, instance, db.cfg.Now())
}

// Backlog counts the work waiting for WeCom quota.
type Backlog struct {
	// Queued counts the fans in the registration queue by class
	// (QueueInteractive, QueueBulk, QueueRenew).
	Queued map[int]int64
	// QueuedBy counts them by priority and class, in queue order:
	// interactive first, then by priority, renewals before bulk.
	QueuedBy []QueuedCount
	// Unchecked counts registered fans not yet checked against
	// unionid_to_external_userid.
	Unchecked int64
}

// QueuedCount is how many queued fans have a priority and class.
type QueuedCount struct {
	Priority, Class int
	Count           int64
}

// Backlog returns the work waiting for quota: the registration queue by
// class, and the fans never checked that were created after after (zero:
// all; a running sweep counts the earlier ones).
func (db *DB) Backlog(ctx context.Context, after time.Time) (Backlog, error) {
	return db.eng.backlog(ctx, after)
}

// ExpiringByPriority counts, by priority (highest first), the registered
// fans not in the registration queue whose newest pending_id expires within
// the given time or has expired: the renewals to come, and those overdue.
// It counts whole UTC days, to the last one's end.
func (db *DB) ExpiringByPriority(ctx context.Context, within time.Duration) ([]QueuedCount, error) {
	return db.eng.expiringBy(ctx, db.cfg.Now(), within)
}
