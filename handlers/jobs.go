package handlers

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
)

// PipelineStore is what the workers and the /v1 API need from persistence
// beyond Store. *store.DB implements it.
type PipelineStore interface {
	Store
	// RecordResolution stores what WeCom answered for a customer and links it
	// to every fan holding the same live pending_id, in one transaction.
	RecordResolution(ctx context.Context, r store.Resolution) ([]store.Link, error)
	// EndLinks marks the active links of a customer inactive.
	EndLinks(ctx context.Context, e store.EndLink) ([]store.Link, error)
	// RecordFanPendingID stores a pending_id issued for a fan and links it to
	// every customer already resolved to it, in one transaction.
	RecordFanPendingID(ctx context.Context, unionID, pendingID string, backfill bool) ([]store.Link, error)
	// LinkExisting links a fan to customers WeCom says a dealer already has.
	LinkExisting(ctx context.Context, unionID string, found []store.CorpCustomer) ([]store.Link, error)
	// FailFan records that registering a fan failed for good.
	FailFan(ctx context.Context, unionID, reason string) error
	// RegisterFans stores fans and queues a register job for each one that has
	// no live pending_id and no registration under way.
	RegisterFans(ctx context.Context, fans []store.FanInput, opts store.RegisterOpts) (store.RegisterResult, error)
	// FindFan returns a fan with its pending_ids and links, or ErrNotFound.
	FindFan(ctx context.Context, unionID string) (*store.FanDetail, error)
	// FindLinks lists links newest first.
	FindLinks(ctx context.Context, f store.LinkFilter) ([]store.Link, error)
	// FindCustomer returns a customer's resolutions and links, or ErrNotFound.
	FindCustomer(ctx context.Context, corpID, externalUserID string) (*store.CustomerDetail, error)
	// FansToRenew lists fans without an active link whose newest pending_id
	// expires before the given time.
	FansToRenew(ctx context.Context, before time.Time, limit int) ([]store.FanInput, error)
	// CountQueuedRegistrations counts register jobs not yet finished.
	CountQueuedRegistrations(ctx context.Context) (int64, error)
	// NextOutbox returns the oldest undelivered notification of a link, or ErrNotFound.
	NextOutbox(ctx context.Context, linkID int64) (*store.OutboxItem, error)
	// MarkOutbox records a delivery attempt; errMsg == "" means delivered.
	MarkOutbox(ctx context.Context, id int64, errMsg string) error
	// PruneQuota drops quota counter buckets older than beforeUnix.
	PruneQuota(ctx context.Context, beforeUnix int64) (int64, error)
	// PipelineStatus returns the counters /v1/status adds for the pipeline.
	PipelineStatus(ctx context.Context, expiringWithin time.Duration) (store.PipelineStatus, error)
}

// WeComAPI is the part of *wecom.Client the pipeline calls.
type WeComAPI interface {
	PendingResolver
	UnionIDToPendingID(ctx context.Context, unionID, openID string) (string, error)
	UnionIDToExternalUserID(ctx context.Context, unionID, openID, corpID string) ([]wecom.ExternalUserIDInfo, error)
}

// Job priorities (River: 1 runs first). Interactive registrations go ahead
// of bulk imports, and renewals use what is left.
const (
	PriorityInteractive = 1
	PriorityBulk        = 3
	PriorityRenew       = 4
)

// PipelineConfig configures the River workers.
type PipelineConfig struct {
	// Store persists everything. Required.
	Store PipelineStore
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
	// Backfill asks unionid_to_external_userid at registration for
	// customers the dealers already have (PENDINGLINK_BACKFILL_EXISTING).
	Backfill bool
	// Webhook delivers link notifications. Nil: none are sent.
	Webhook *Webhook
	// RenewBefore renews pending_ids of unmatched fans this long before they
	// expire. Defaults to 7 days.
	RenewBefore time.Duration
	// Quota tells the renewer how much registration quota is spare. Nil: the
	// renewer enqueues at most RenewBatch fans per run.
	Quota QuotaUsage
	// RenewBatch caps the fans one renew run enqueues. Defaults to 1000.
	RenewBatch int
	// Now defaults to time.Now.
	Now func() time.Time
}

// QuotaUsage reports the registration quota's windows; *quota.Limiter implements it.
type QuotaUsage interface {
	Usage() []quota.Usage
}

func (cfg PipelineConfig) withDefaults() (PipelineConfig, error) {
	switch {
	case cfg.Store == nil:
		return cfg, errors.New("handlers: PipelineConfig.Store is required: pass the *store.DB")
	case cfg.WeCom == nil:
		return cfg, errors.New("handlers: PipelineConfig.WeCom is required: pass a *wecom.Client")
	case cfg.Coalescer == nil:
		return cfg, errors.New("handlers: PipelineConfig.Coalescer is required: build it with NewCoalescer")
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
	if cfg.RenewBatch <= 0 {
		cfg.RenewBatch = 1000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, nil
}

// AddWorkers registers every pipeline worker in workers. The store and the
// workers need each other, so main passes an empty river.Workers to
// store.Open, then adds the workers here before store.Start.
func AddWorkers(workers *river.Workers, cfg PipelineConfig) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	river.AddWorker(workers, &resolveWorker{cfg: cfg})
	river.AddWorker(workers, &endLinkWorker{cfg: cfg})
	river.AddWorker(workers, &registerWorker{cfg: cfg})
	river.AddWorker(workers, &backfillWorker{cfg: cfg})
	river.AddWorker(workers, &renewWorker{cfg: cfg})
	river.AddWorker(workers, newNotifyWorker(cfg))
	river.AddWorker(workers, &pruneWorker{cfg: cfg})
	return nil
}

// deferFor decides how long rate-limited work waits: until the limiter's
// retry time when it gave one, else the configured delay.
func deferFor(err error, now time.Time, fallback time.Duration) time.Duration {
	var qe *quota.Error
	if errors.As(err, &qe) && qe.RetryAt.After(now) {
		return qe.RetryAt.Sub(now) + 10*time.Millisecond
	}
	return fallback
}

// classify turns a WeCom error into River's answer: snooze rate limits,
// retry what is retryable (River's backoff), cancel what never succeeds.
// failed is called with the reason before a cancel.
func classify(err error, now time.Time, cfg PipelineConfig, failed func(reason string)) error {
	switch {
	case wecom.IsRateLimited(err):
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

// pruneWorker drops quota counters no window counts any more.
type pruneWorker struct {
	river.WorkerDefaults[store.PruneArgs]
	cfg PipelineConfig
}

func (w *pruneWorker) Work(ctx context.Context, _ *river.Job[store.PruneArgs]) error {
	n, err := w.cfg.Store.PruneQuota(ctx, w.cfg.Now().Add(-QuotaRetention).Unix())
	if err != nil {
		return err
	}
	w.cfg.Logger.Info("pruned quota counters", "buckets", n)
	return nil
}
