package store

import (
	"context"
	"database/sql"

	"github.com/riverqueue/river"
)

// JobPolicy says which River jobs follow a write. The store inserts them in
// the write's own transaction, so a committed write always has its jobs and
// a failed one has none. The pipeline owns the policy (which kinds, queues,
// priorities and uniqueness); the store only carries it out. A nil
// Config.Jobs inserts no jobs at all.
type JobPolicy interface {
	// EventJobs returns the jobs a newly stored event enqueues, given the
	// id it was stored under. An event with none is stored EventRecorded
	// (or EventIgnored); one with jobs is stored EventPending.
	EventJobs(ev *Event, id int64) []river.InsertManyParams
	// NotificationJobs returns the jobs that follow a notification of a
	// link change written to the outbox.
	NotificationJobs(l Link) []river.InsertManyParams
	// PendingIDJobs returns the jobs that follow a pending_id recorded for
	// a fan.
	PendingIDJobs(f FanInput) []river.InsertManyParams
}

// jobInserter inserts the policy's jobs in the caller's transaction.
type jobInserter struct {
	rc     *river.Client[*sql.Tx]
	policy JobPolicy
}

// eventJobs returns the jobs of ev, or nil without a policy.
func (j jobInserter) eventJobs(ev *Event, id int64) []river.InsertManyParams {
	if j.policy == nil {
		return nil
	}
	return j.policy.EventJobs(ev, id)
}

// insert inserts params in tx; nothing to insert is not an error.
func (j jobInserter) insert(ctx context.Context, tx *sql.Tx, params []river.InsertManyParams) error {
	if len(params) == 0 {
		return nil
	}
	if len(params) == 1 {
		_, err := j.rc.InsertTx(ctx, tx, params[0].Args, params[0].InsertOpts)
		return err
	}
	_, err := j.rc.InsertManyFastTx(ctx, tx, params)
	return err
}

// notification inserts the jobs that follow an outbox row of l.
func (j jobInserter) notification(ctx context.Context, tx *sql.Tx, l Link) error {
	if j.policy == nil {
		return nil
	}
	return j.insert(ctx, tx, j.policy.NotificationJobs(l))
}

// pendingID inserts the jobs that follow a fan's new pending_id.
func (j jobInserter) pendingID(ctx context.Context, tx *sql.Tx, f FanInput) error {
	if j.policy == nil {
		return nil
	}
	return j.insert(ctx, tx, j.policy.PendingIDJobs(f))
}
