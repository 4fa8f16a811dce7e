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

// ErrRefused means WeCom refused a registration for good (for example
// 610014: the fan's unionid does not belong to this corp's entity). The
// error wraps WeCom's answer too.
var ErrRefused = errors.New("WeCom refused the registration")

// Registration says what Register did.
type Registration int

const (
	// AlreadyRegistered: the fan holds a live pending_id; nothing was called.
	AlreadyRegistered Registration = iota
	// Registered: WeCom issued a pending_id just now.
	Registered
	// Queued: the registration waits for quota or a retry, ahead of bulk work.
	Queued
)

type registerStore interface {
	// RegisterFans stores fans and puts in the registration queue each one that has
	// no live pending_id and no registration under way.
	RegisterFans(ctx context.Context, fans []store.FanInput, opts store.RegisterOpts) (store.RegisterResult, error)
	// RecordFanPendingID stores a pending_id issued for a fan and links it to
	// every customer already resolved to it, in one transaction.
	RecordFanPendingID(ctx context.Context, unionID, pendingID string) ([]store.Link, error)
	// FailFan records that registering a fan failed for good.
	FailFan(ctx context.Context, unionID, reason string) error
	backfillStore
}

// Register registers one fan interactively. When the quota allows a call
// now it calls WeCom at once; otherwise, or after a transient failure, it
// queues the work ahead of bulk registrations. Errors: store.ErrInvalid for
// a bad fan, ErrRefused when WeCom refuses it for good.
func (p *Pipeline) Register(ctx context.Context, fan store.FanInput) (Registration, error) {
	// First store the fan without a job: if the call below settles it, no
	// job is needed.
	res, err := p.cfg.Store.RegisterFans(ctx, []store.FanInput{fan}, store.RegisterOpts{Priority: store.QueueInteractive, NoJob: true})
	if err != nil {
		return 0, err
	}
	if res.Queued == 0 {
		return AlreadyRegistered, nil
	}
	if p.cfg.Quota == nil || !p.cfg.Quota.NextAt().After(p.cfg.Now()) {
		_, err := p.register(ctx, fan.UnionID, fan.OpenID)
		switch {
		case err == nil:
			p.checkNow(ctx, fan)
			return Registered, nil
		case wecom.IsPermanent(err) && !wecom.IsRateLimited(err) && !wecom.IsBlocked(err):
			return 0, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		p.cfg.Logger.Info("interactive registration queued after a transient error", "err", err)
	}
	// Queued even if the client has gone: the fan is stored, and only the
	// queue gets it registered.
	if _, err := p.cfg.Store.RegisterFans(context.WithoutCancel(ctx), []store.FanInput{fan}, store.RegisterOpts{Priority: store.QueueInteractive}); err != nil {
		return 0, err
	}
	p.WakeRegistrar()
	return Queued, nil
}

// checkNow asks unionid_to_external_userid about a fan just registered,
// when CheckExisting is on and its quota allows a call now. Whatever goes
// wrong is left to the reconcile job, which checks every fan not yet
// checked.
func (p *Pipeline) checkNow(ctx context.Context, fan store.FanInput) {
	if !p.cfg.CheckExisting || p.cfg.ExistingQuota != nil && p.cfg.ExistingQuota.NextAt().After(p.cfg.Now()) {
		return
	}
	found, err := checkExisting(ctx, p.cfg, fan)
	var refused *refusedError
	if err != nil && !errors.As(err, &refused) {
		p.cfg.Logger.Info("existing-customer check left to the reconcile job", "err", err)
		return
	}
	links, err := p.cfg.Store.RecordCheck(ctx, fan.UnionID, found, 0)
	if err != nil {
		p.cfg.Logger.Error("record existing-customer check", "err", err)
		return
	}
	logLinks(p.cfg.Logger, "link created", links, "check")
}

// RegisterBatch queues fans as bulk work. Fans already holding a live
// pending_id, or already queued, are skipped.
func (p *Pipeline) RegisterBatch(ctx context.Context, fans []store.FanInput) (store.RegisterResult, error) {
	res, err := p.cfg.Store.RegisterFans(ctx, fans, store.RegisterOpts{Priority: store.QueueBulk})
	if err == nil && res.Queued > 0 {
		p.WakeRegistrar()
	}
	return res, err
}

// queueStranded queues, ahead of bulk work, the fans whose interactive
// registration was cut off (the process died during the call), a batch a
// run: there are as many as calls in flight when processes died.
func (w *renewWorker) queueStranded(ctx context.Context) error {
	fans, err := w.store.StrandedFans(ctx, w.cfg.Now().Add(-strandedAfter), w.cfg.RenewBatch)
	if err != nil || len(fans) == 0 {
		return err
	}
	res, err := w.store.RegisterFans(ctx, fans, store.RegisterOpts{Priority: store.QueueInteractive})
	if err != nil {
		return err
	}
	w.cfg.Logger.Warn("queued fans whose interactive registration was cut off", "fans", len(fans), "queued", res.Queued)
	if res.Queued > 0 {
		w.wake()
	}
	return nil
}

// register calls WeCom and records the pending_id; both the worker and
// Register use it. A permanent WeCom error is recorded on the fan before it
// is returned.
func (p *Pipeline) register(ctx context.Context, unionID, openID string) ([]store.Link, error) {
	pendingID, err := p.cfg.WeCom.UnionIDToPendingID(ctx, unionID, openID)
	// What WeCom answered is recorded even if the caller has gone (a client
	// that hung up, a registrar shutting down): the call is spent.
	ctx = context.WithoutCancel(ctx)
	if err != nil {
		if wecom.IsPermanent(err) && !wecom.IsRateLimited(err) && !wecom.IsBlocked(err) {
			if ferr := p.cfg.Store.FailFan(ctx, unionID, err.Error()); ferr != nil {
				p.cfg.Logger.Error("record failed registration", "err", ferr)
			}
		}
		return nil, err
	}
	links, err := p.cfg.Store.RecordFanPendingID(ctx, unionID, pendingID)
	if err != nil {
		return nil, fmt.Errorf("record pending_id: %w", err)
	}
	logLinks(p.cfg.Logger, "link created", links, "register")
	return links, nil
}

// registerWorker turns a fan's unionid+openid into a pending_id. Nothing
// queues it any more (the registrar works the fans table); it works the
// jobs earlier versions queued. The client's quota limiter paces the calls;
// when a window is full the job snoozes until it frees.
type registerWorker struct {
	river.WorkerDefaults[RegisterArgs]
	p *Pipeline
}

func (w *registerWorker) Work(ctx context.Context, job *river.Job[RegisterArgs]) error {
	_, err := w.p.register(ctx, job.Args.UnionID, job.Args.OpenID)
	if err != nil {
		// The fan's failure is already recorded by register.
		return classify(err, w.p.cfg.Now(), w.p.cfg, func(string) {})
	}
	return nil
}

type backfillStore interface {
	// RecordCheck links a fan to the customers unionid_to_external_userid
	// reported and marks it checked.
	RecordCheck(ctx context.Context, unionID string, found []store.CorpCustomer, sweepID int64) ([]store.Link, error)
}

// backfillWorker checks one fan against unionid_to_external_userid and
// links what it finds. Nothing queues it any more; it works the jobs
// earlier versions queued.
type backfillWorker struct {
	river.WorkerDefaults[BackfillArgs]
	cfg   Config
	store backfillStore
}

func (w *backfillWorker) Work(ctx context.Context, job *river.Job[BackfillArgs]) error {
	a := job.Args
	found, err := checkExisting(ctx, w.cfg, store.FanInput{UnionID: a.UnionID, OpenID: a.OpenID})
	if err != nil {
		return classify(err, w.cfg.Now(), w.cfg, func(reason string) {
			w.cfg.Logger.Warn("backfill failed", "reason", reason)
		})
	}
	links, err := w.store.RecordCheck(ctx, a.UnionID, found, 0)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return river.JobCancel(err)
		}
		return fmt.Errorf("link existing customers: %w", err)
	}
	logLinks(w.cfg.Logger, "link created", links, "backfill")
	return nil
}

type renewStore interface {
	// FansToRenew lists fans whose newest pending_id expires before the
	// given time, highest priority first.
	FansToRenew(ctx context.Context, before time.Time, limit int) ([]store.FanInput, error)
	RegisterFans(ctx context.Context, fans []store.FanInput, opts store.RegisterOpts) (store.RegisterResult, error)
	// StrandedFans lists fans an interactive registration stored and
	// never settled nor queued, unchanged since before.
	StrandedFans(ctx context.Context, before time.Time, limit int) ([]store.FanInput, error)
	renewalStore
}

// strandedAfter is how long a fan stored for an interactive registration
// may stay neither registered nor queued before the renew job queues it:
// far longer than a call to WeCom can take.
const strandedAfter = 10 * time.Minute

// renewWorker queues fans whose pending_ids are about to expire for
// re-registration, as many a run as the quota serves before the next:
// RenewBefore ahead of expiry, or at expiry, as the renewal policy decides
// on each run. The registrar then orders them with the first registrations
// by the fans' priorities, so that when the quota cannot keep every fan
// live the lowest-priority ones are left to expire.
//
// Fans queued early before the policy turned to renewing at expiry stay
// queued and are renewed (each answer is one more observation): at most
// the renewals queued and not yet made, and taking them back would race
// the registrar's calls.
type renewWorker struct {
	river.WorkerDefaults[RenewArgs]
	cfg   Config
	store renewStore
	wake  func()
}

func (w *renewWorker) Work(ctx context.Context, _ *river.Job[RenewArgs]) error {
	if err := w.queueStranded(ctx); err != nil {
		return err
	}
	pol, err := renewalPolicy(ctx, w.cfg, w.store)
	if err != nil {
		return err
	}
	// Queue what the quota can serve before the next run, so that renewals
	// compete in the queue by priority instead of trickling in a batch an
	// hour: ten million fans bring over 100,000 renewals a day.
	limit := int64(w.cfg.RenewBatch)
	if w.cfg.Quota != nil {
		limit = max(limit, min(quota.CallsWithin(w.cfg.Quota.Usage(), w.cfg.RenewInterval), maxRenewPerRun))
	}
	before := w.cfg.Now().Add(pol.RenewBefore)
	var read, queued int64
	for read < limit {
		fans, err := w.store.FansToRenew(ctx, before, int(min(int64(w.cfg.RenewBatch), limit-read)))
		if err != nil {
			return err
		}
		if len(fans) == 0 {
			break
		}
		res, err := w.store.RegisterFans(ctx, fans, store.RegisterOpts{Priority: store.QueueRenew, Renew: true})
		if err != nil {
			return err
		}
		// Counting the fans read, not those queued, ends the run even if
		// a fan listed is never queued (and so listed again).
		read, queued = read+int64(len(fans)), queued+int64(res.Queued)
		if len(fans) < w.cfg.RenewBatch {
			break
		}
	}
	if queued > 0 {
		w.wake()
	}
	if read > 0 {
		w.cfg.Logger.Info("renewing pending_ids", "fans", read, "queued", queued, "early", pol.Early,
			"same_id_answers", pol.Observed.SameID, "new_id_answers", pol.Observed.NewID)
	}
	return nil
}

// maxRenewPerRun bounds one renew run: a day of WeCom's hourly quota.
const maxRenewPerRun = 24 * 100_000
