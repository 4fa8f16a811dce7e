package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
)

// Store is everything the pipeline needs from persistence; each worker holds
// only its own slice of it. *store.DB implements it.
type Store interface {
	resolveStore
	endLinkStore
	registerStore
	backfillStore
	renewStore
	renewalStore
	notifyStore
	pruneStore
	failStore
	reconcileStore
	chatMembersStore
	registrarStore
	forecastStore
	gaugeStore
	// PipelineStatus returns the counters /v1/status shows for the pipeline.
	PipelineStatus(ctx context.Context, expiringWithin time.Duration) (store.PipelineStatus, error)
}

// WeComAPI is the part of *wecom.Client the pipeline calls.
type WeComAPI interface {
	PendingResolver
	UnionIDToPendingID(ctx context.Context, unionID, openID string) (string, error)
	UnionIDToExternalUserID(ctx context.Context, unionID, openID, corpID string) ([]wecom.ExternalUserIDInfo, error)
	GroupChatMembers(ctx context.Context, corpID, chatID string) ([]wecom.ChatMember, error)
}

// Quota reports the registration quota; *quota.Limiter implements it.
type Quota interface {
	// Usage reports each window's use.
	Usage() []quota.Usage
	// NextAt is when the next call may be made.
	NextAt() time.Time
}

// Config configures the pipeline. Fields without a default are required.
type Config struct {
	// Store persists everything. Required.
	Store Store
	// WeCom calls the WeCom API. Required.
	WeCom WeComAPI
	// Coalescer batches resolve calls. Required: NewCoalescer(client, …).
	Coalescer *Coalescer
	// Logger defaults to a discard logger.
	Logger *slog.Logger
	// NotCustomerYetDelay is how long a resolve waits before its one retry
	// after WeCom answered 84061 or returned no pending_id right after an add.
	// Defaults to 45s (the reference advises 30–60 s).
	NotCustomerYetDelay time.Duration
	// RateLimitDelay is how long work waits after a WeCom rate-limit answer
	// that carries no retry time. Defaults to one minute.
	RateLimitDelay time.Duration
	// Webhook delivers link notifications. Nil: none are sent.
	Webhook *Webhook
	// RenewBefore renews pending_ids this long before they expire, while
	// renewals start early (RenewEarly). Defaults to 7 days.
	RenewBefore time.Duration
	// RenewEarly says whether renewals start RenewBefore ahead of expiry
	// (always), at expiry (never), or early until the renewal observations
	// show WeCom giving the same id back (auto). Defaults to auto.
	RenewEarly RenewEarly
	// RenewLearnAfter is how many renewals answered with the id the fan
	// held, and none with a new one, turn auto to renewing at expiry.
	// Defaults to DefaultRenewLearnAfter.
	RenewLearnAfter int
	// Quota is the registration quota. Register calls WeCom at once only
	// when it allows a call now, and a renew run queues as many fans as it
	// allows calls before the next run (RenewInterval). Nil: Register
	// always tries at once, and a renew run queues RenewBatch fans.
	Quota Quota
	// RenewBatch is how many fans a renew run reads and queues at a time
	// (and at least queues, while as many are due). Defaults to 1000.
	RenewBatch int
	// RenewInterval is how often the renew job runs (PeriodicJobs'
	// renewEvery). Defaults to an hour.
	RenewInterval time.Duration
	// CheckExisting asks unionid_to_external_userid about every registered
	// fan once, for customers the dealers already have: at once for an
	// interactive registration when its quota allows, otherwise in the
	// reconcile job. Reconcile sweeps run either way.
	CheckExisting bool
	// ExistingQuota is unionid_to_external_userid's quota; the reconcile
	// job leaves a tenth of its tightest window to interactive
	// registrations. Nil: no limit but ReconcileBatch.
	ExistingQuota Quota
	// ReconcileBatch caps the fans one reconcile run checks. Defaults to 500.
	ReconcileBatch int
	// RegisterConcurrency is how many registrations the registrar has in
	// flight at once: enough to reach the quota's rate while WeCom takes
	// its time to answer. Defaults to 8.
	RegisterConcurrency int
	// RegisterPoll is how often an idle registrar looks for queued fans
	// (fans queued on this instance wake it at once). Defaults to 1s.
	RegisterPoll time.Duration
	// LeaseRetry is how often an instance tries to become the registrar,
	// and the registrar checks it still is. Defaults to 1s.
	LeaseRetry time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
	// Sleep waits d or until ctx ends and returns ctx's error; the
	// registrar waits with it. Defaults to quota.Sleep; a fake clock's
	// Sleep advances the clock instead, for simulations.
	Sleep func(ctx context.Context, d time.Duration) error
}

func (cfg Config) withDefaults() (Config, error) {
	switch {
	case cfg.Store == nil:
		return cfg, errors.New("pipeline: Config.Store is required: pass the *store.DB")
	case cfg.WeCom == nil:
		return cfg, errors.New("pipeline: Config.WeCom is required: pass a *wecom.Client")
	case cfg.Coalescer == nil:
		return cfg, errors.New("pipeline: Config.Coalescer is required: build it with NewCoalescer")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NotCustomerYetDelay <= 0 {
		cfg.NotCustomerYetDelay = 45 * time.Second
	}
	if cfg.RateLimitDelay <= 0 {
		cfg.RateLimitDelay = time.Minute
	}
	if cfg.RenewBefore <= 0 {
		cfg.RenewBefore = 7 * 24 * time.Hour
	}
	switch cfg.RenewEarly {
	case "":
		cfg.RenewEarly = RenewEarlyAuto
	case RenewEarlyAuto, RenewEarlyAlways, RenewEarlyNever:
	default:
		return cfg, fmt.Errorf("pipeline: Config.RenewEarly %q: must be auto, always or never", cfg.RenewEarly)
	}
	if cfg.RenewLearnAfter <= 0 {
		cfg.RenewLearnAfter = DefaultRenewLearnAfter
	}
	if cfg.RenewInterval <= 0 {
		cfg.RenewInterval = time.Hour
	}
	if cfg.RenewBatch <= 0 {
		cfg.RenewBatch = 1000
	}
	if cfg.ReconcileBatch <= 0 {
		cfg.ReconcileBatch = 500
	}
	if cfg.RegisterConcurrency <= 0 {
		cfg.RegisterConcurrency = 8
	}
	if cfg.RegisterPoll <= 0 {
		cfg.RegisterPoll = time.Second
	}
	if cfg.LeaseRetry <= 0 {
		cfg.LeaseRetry = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = quota.Sleep
	}
	return cfg, nil
}

// Pipeline turns stored events and registered fans into links: its River
// workers do the work, and Register lets the HTTP layer register a fan at
// once when the quota allows.
type Pipeline struct {
	cfg Config
	// wake tells an idle registrar that fans were queued.
	wake chan struct{}
}

// New validates cfg and returns the pipeline.
func New(cfg Config) (*Pipeline, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Pipeline{cfg: cfg, wake: make(chan struct{}, 1)}, nil
}

// AddWorkers registers every pipeline worker in workers. The store and the
// workers need each other, so main passes an empty river.Workers to
// store.Open, then adds the workers here before store.Start.
func (p *Pipeline) AddWorkers(workers *river.Workers) {
	ws := p.newWorkers()
	river.AddWorker(workers, ws.resolve)
	river.AddWorker(workers, ws.endLink)
	river.AddWorker(workers, ws.register)
	river.AddWorker(workers, ws.backfill)
	river.AddWorker(workers, ws.renew)
	river.AddWorker(workers, ws.notify)
	river.AddWorker(workers, ws.prune)
	river.AddWorker(workers, ws.reconcile)
	river.AddWorker(workers, ws.chatMembers)
}

// workerSet is one of each worker, sharing the pipeline's configuration.
type workerSet struct {
	resolve     *resolveWorker
	endLink     *endLinkWorker
	register    *registerWorker
	backfill    *backfillWorker
	renew       *renewWorker
	notify      *notifyWorker
	prune       *pruneWorker
	reconcile   *reconcileWorker
	chatMembers *chatMembersWorker
}

func (p *Pipeline) newWorkers() workerSet {
	cfg := p.cfg
	return workerSet{
		resolve:     &resolveWorker{cfg: cfg, store: cfg.Store},
		endLink:     &endLinkWorker{cfg: cfg, store: cfg.Store},
		register:    &registerWorker{p: p},
		backfill:    &backfillWorker{cfg: cfg, store: cfg.Store},
		renew:       &renewWorker{cfg: cfg, store: cfg.Store, wake: p.WakeRegistrar},
		notify:      newNotifyWorker(cfg, cfg.Store),
		prune:       &pruneWorker{cfg: cfg, store: cfg.Store},
		reconcile:   &reconcileWorker{cfg: cfg, store: cfg.Store},
		chatMembers: &chatMembersWorker{cfg: cfg, store: cfg.Store},
	}
}

// Status returns the pipeline's counters, with fans expiring within the
// renew horizon.
func (p *Pipeline) Status(ctx context.Context) (store.PipelineStatus, error) {
	return p.cfg.Store.PipelineStatus(ctx, p.cfg.RenewBefore)
}

// deferFor decides how long rate-limited work waits: until the limiter's
// retry time or for the answer's Retry-After when either gave one, else the
// configured delay.
func deferFor(err error, now time.Time, fallback time.Duration) time.Duration {
	var qe *quota.Error
	if errors.As(err, &qe) && qe.RetryAt.After(now) {
		return qe.RetryAt.Sub(now) + 10*time.Millisecond
	}
	if d, ok := wecom.RetryAfter(err); ok {
		return d
	}
	return fallback
}

// classify turns a WeCom error into River's answer: snooze a blocked API
// (configuration fault) until its next probe, snooze rate limits and
// answers with a Retry-After, retry what is retryable (River's backoff),
// cancel what never succeeds.
// failed is called with the reason before a cancel.
func classify(err error, now time.Time, cfg Config, failed func(reason string)) error {
	_, retryAfter := wecom.RetryAfter(err)
	switch {
	case wecom.IsBlocked(err):
		// A configuration fault: the work waits for the client's next probe
		// of the API, however long the fix takes.
		until, _ := wecom.BlockedUntil(err)
		return river.JobSnooze(max(until.Sub(now), time.Second) + 10*time.Millisecond)
	case wecom.IsRateLimited(err), retryAfter:
		return river.JobSnooze(deferFor(err, now, cfg.RateLimitDelay))
	case errors.Is(err, ErrCoalescerClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case wecom.IsRetryable(err):
		return err
	case wecom.IsPermanent(err):
		failed(err.Error())
		return river.JobCancel(err)
	default:
		return err
	}
}

// logLinks logs each link a job changed, without personal ids beyond the link's own.
func logLinks(logger *slog.Logger, msg string, links []store.Link, via string) {
	for _, l := range links {
		logger.Info(msg, "link_id", l.ID, "corp_id", l.CorpID, "via", via)
	}
}

// QuotaRetention is how long quota counters are kept: longer than the longest
// window (31 days), so pruning never lowers a count still in use.
const QuotaRetention = 32 * 24 * time.Hour

type pruneStore interface {
	// PruneQuota drops quota counter buckets older than beforeUnix.
	PruneQuota(ctx context.Context, beforeUnix int64) (int64, error)
}

// pruneWorker drops quota counters no window counts any more.
type pruneWorker struct {
	river.WorkerDefaults[PruneArgs]
	cfg   Config
	store pruneStore
}

func (w *pruneWorker) Work(ctx context.Context, _ *river.Job[PruneArgs]) error {
	n, err := w.store.PruneQuota(ctx, w.cfg.Now().Add(-QuotaRetention).Unix())
	if err != nil {
		return fmt.Errorf("prune quota counters: %w", err)
	}
	w.cfg.Logger.Info("pruned quota counters", "buckets", n)
	return nil
}
