package store

import (
	"context"
	"time"
)

// JobCount is how many River jobs of one queue are in one state.
type JobCount struct {
	Queue, State string
	Count        int64
}

// JobStates are the River job states JobCounts counts: every unfinished
// state, and discarded (jobs that gave up, kept until River's cleaner
// deletes them, 7 days by default).
var JobStates = []string{"available", "scheduled", "retryable", "running", "pending", "discarded"}

// JobCounts counts River jobs by queue and state (JobStates), leaving out
// the pairs that have none. Completed and cancelled jobs are not counted:
// their number says nothing about health and only grows until cleaned.
func (db *DB) JobCounts(ctx context.Context) ([]JobCount, error) {
	return db.eng.jobCounts(ctx)
}

// OutboxStatus summarises the webhook notifications not yet delivered.
type OutboxStatus struct {
	Undelivered int64
	// Failing counts undelivered notifications whose last attempt failed.
	Failing int64
	// Oldest is when the oldest undelivered notification was written; zero
	// when none waits.
	Oldest time.Time
}

// OutboxStatus reads the undelivered notifications' count, failing count
// and age.
func (db *DB) OutboxStatus(ctx context.Context) (OutboxStatus, error) {
	return db.eng.outboxStatus(ctx)
}

// CountFansExpiring counts the fans whose newest pending_id is still live
// and expires within the given time from now.
func (db *DB) CountFansExpiring(ctx context.Context, within time.Duration) (int64, error) {
	return db.eng.countFansExpiring(ctx, db.cfg.Now(), within)
}

// CheckTallies recounts every set the status counts come from (migration
// 009's tallies, and each fan's live_until) and returns those whose kept
// count differs: none, unless the database was written around the triggers.
// It scans whole tables: for tests and `pendinglink db check`, not a status
// page.
func (db *DB) CheckTallies(ctx context.Context) ([]TallyDrift, error) {
	return db.eng.checkTallies(ctx)
}
