package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
)

// ReconcileArgs is the periodic job that checks fans against
// unionid_to_external_userid: registered fans never checked, then the fans
// of a running sweep.
type ReconcileArgs struct{}

// Kind implements river.JobArgs.
func (ReconcileArgs) Kind() string { return "reconcile" }

type reconcileStore interface {
	// NextFansToCheck returns the next fans to check: never-checked ones
	// (with includeNew), then the running sweep's.
	NextFansToCheck(ctx context.Context, limit int, includeNew bool) (store.FansToCheck, error)
	// RecordCheck links a fan to the customers found and marks it checked.
	RecordCheck(ctx context.Context, unionID string, found []store.CorpCustomer, sweepID int64) ([]store.Link, error)
	// FinishSweep marks a sweep finished.
	FinishSweep(ctx context.Context, id int64) error
	// StartSweep starts a sweep, or returns the one running.
	StartSweep(ctx context.Context, reason string, registeredBefore time.Time) (*store.Sweep, bool, error)
	// LatestSweep returns the newest sweep, nil if none.
	LatestSweep(ctx context.Context) (*store.Sweep, error)
	// RetryEvents and RetryFans re-drive what failed.
	RetryEvents(ctx context.Context, f store.RetryFilter) (int64, error)
	RetryFans(ctx context.Context, f store.RetryFilter) (int64, error)
}

// Reconcile starts a sweep of the registered fans without an active link
// created before registeredBefore (zero: now): the reconcile job checks
// each against unionid_to_external_userid again, newest first. A sweep
// already running is returned instead, with started == false.
func (p *Pipeline) Reconcile(ctx context.Context, registeredBefore time.Time) (*store.Sweep, bool, error) {
	return p.cfg.Store.StartSweep(ctx, store.SweepRequested, registeredBefore)
}

// LatestSweep returns the newest sweep with its progress, nil if none.
func (p *Pipeline) LatestSweep(ctx context.Context) (*store.Sweep, error) {
	return p.cfg.Store.LatestSweep(ctx)
}

// RetryEvents re-drives the failed (or unmatched) events f selects: they
// get their jobs again and go back to pending.
func (p *Pipeline) RetryEvents(ctx context.Context, f store.RetryFilter) (int64, error) {
	return p.cfg.Store.RetryEvents(ctx, f)
}

// RetryFans re-queues the failed fans f selects for registration.
func (p *Pipeline) RetryFans(ctx context.Context, f store.RetryFilter) (int64, error) {
	return p.cfg.Store.RetryFans(ctx, f)
}

// reconcileWorker finds customers the dealers already have, or added while
// nobody heard their callback: for each fan it asks
// unionid_to_external_userid and links what WeCom reports. It spends at
// most ReconcileBatch calls a run, and never the last tenth of the tightest
// quota window, which interactive registrations use.
type reconcileWorker struct {
	river.WorkerDefaults[ReconcileArgs]
	cfg   Config
	store reconcileStore
}

// reconcileRunTime bounds one run: it ends well inside River's job timeout
// (a minute), so no rescuer takes a run that is still working for one that
// died, and the next run goes on where it stopped.
const reconcileRunTime = 40 * time.Second

func (w *reconcileWorker) Work(ctx context.Context, _ *river.Job[ReconcileArgs]) error {
	ctx, cancel := context.WithTimeout(ctx, reconcileRunTime)
	defer cancel()
	budget := int64(w.cfg.ReconcileBatch)
	if q := w.cfg.ExistingQuota; q != nil {
		budget = min(budget, quota.Spare(q.Usage())-interactiveReserve(q.Usage()))
	}
	if budget <= 0 {
		return nil
	}
	next, err := w.store.NextFansToCheck(ctx, int(budget), w.cfg.CheckExisting)
	if err != nil {
		return err
	}
	for _, f := range next.New {
		if done, err := w.check(ctx, f, 0); done || err != nil {
			return err
		}
	}
	if next.Sweep == nil {
		return nil
	}
	// The sweep ends when its query finds no fan left, not when Remaining,
	// an estimate, reaches 0.
	for _, f := range next.Swept {
		if done, err := w.check(ctx, f, next.Sweep.ID); done || err != nil {
			return err
		}
	}
	if room := int(budget) - len(next.New); len(next.Swept) < room {
		// The sweep had fewer fans left than this run could check: done.
		w.cfg.Logger.Info("reconcile sweep finished", "sweep", next.Sweep.ID,
			"checked", next.Sweep.Checked+int64(len(next.Swept)))
		return w.store.FinishSweep(ctx, next.Sweep.ID)
	}
	return nil
}

// check asks WeCom about one fan and records the answer. stop says this run
// should end here: the quota is used up or WeCom is failing, and the next
// run goes on where this one stopped.
func (w *reconcileWorker) check(ctx context.Context, f store.FanInput, sweepID int64) (stop bool, err error) {
	found, err := checkExisting(ctx, w.cfg, f)
	var refused *refusedError
	switch {
	case errors.As(err, &refused):
		// WeCom refuses this fan for good (e.g. 610014); asking again would
		// only fail again, so it counts as checked with nothing found.
		w.cfg.Logger.Warn("reconcile: WeCom refused a fan", "err", err)
	case err != nil:
		w.cfg.Logger.Info("reconcile paused until its next run", "err", err)
		return true, nil
	}
	// An answer WeCom gave is recorded even if the run's time just ran out.
	links, err := w.store.RecordCheck(context.WithoutCancel(ctx), f.UnionID, found, sweepID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return false, nil // deleted meanwhile
		}
		return true, fmt.Errorf("record check: %w", err)
	}
	logLinks(w.cfg.Logger, "link created", links, "reconcile")
	return false, nil
}

// refusedError is a permanent WeCom answer about one fan.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// checkExisting asks unionid_to_external_userid which dealers have the fan
// as a customer. An answer refusing this fan for good (610014–610017: bad
// unionid, or its account's entity does not match) is a *refusedError;
// every other error says nothing about the fan.
func checkExisting(ctx context.Context, cfg Config, f store.FanInput) ([]store.CorpCustomer, error) {
	infos, err := cfg.WeCom.UnionIDToExternalUserID(ctx, f.UnionID, f.OpenID, "")
	if err != nil {
		var ae *wecom.APIError
		if errors.As(err, &ae) && ae.Code >= 610014 && ae.Code <= 610017 {
			return nil, &refusedError{err}
		}
		return nil, err
	}
	found := make([]store.CorpCustomer, len(infos))
	for i, in := range infos {
		found[i] = store.CorpCustomer{CorpID: in.CorpID, ExternalUserID: in.ExternalUserID}
	}
	return found, nil
}

// interactiveReserve is the part of the tightest window the reconcile job
// leaves to interactive registrations: a tenth.
func interactiveReserve(us []quota.Usage) int64 {
	var reserve int64
	for i, u := range us {
		if r := u.Limit / 10; i == 0 || r < reserve {
			reserve = r
		}
	}
	return reserve
}
