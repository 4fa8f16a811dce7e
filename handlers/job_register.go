package handlers

import (
	"context"
	"errors"
	"fmt"

	"github.com/riverqueue/river"

	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
)

// registerWorker turns a fan's unionid+openid into a pending_id. The client's
// quota limiter paces the calls; when a window is full the job snoozes until
// it frees, so no call WeCom would answer 45009 is made.
type registerWorker struct {
	river.WorkerDefaults[store.RegisterArgs]
	cfg PipelineConfig
}

func (w *registerWorker) Work(ctx context.Context, job *river.Job[store.RegisterArgs]) error {
	_, err := registerFan(ctx, w.cfg, job.Args.UnionID, job.Args.OpenID)
	return err
}

// registerFan calls WeCom and records the pending_id; both the worker and the
// interactive POST /v1/fans use it. Errors are River answers (snooze, cancel).
func registerFan(ctx context.Context, cfg PipelineConfig, unionID, openID string) ([]store.Link, error) {
	pendingID, err := cfg.WeCom.UnionIDToPendingID(ctx, unionID, openID)
	if err != nil {
		return nil, classify(err, cfg.Now(), cfg, func(reason string) {
			if ferr := cfg.Store.FailFan(ctx, unionID, reason); ferr != nil {
				cfg.Logger.Error("record failed registration", "err", ferr)
			}
		})
	}
	links, err := cfg.Store.RecordFanPendingID(ctx, unionID, pendingID, cfg.Backfill)
	if err != nil {
		return nil, fmt.Errorf("record pending_id: %w", err)
	}
	logLinks(cfg.Logger, "link created", links, "register")
	return links, nil
}

// backfillWorker asks unionid_to_external_userid for customers the dealers
// added before the brand registered the fan, and links them.
type backfillWorker struct {
	river.WorkerDefaults[store.BackfillArgs]
	cfg PipelineConfig
}

func (w *backfillWorker) Work(ctx context.Context, job *river.Job[store.BackfillArgs]) error {
	a := job.Args
	infos, err := w.cfg.WeCom.UnionIDToExternalUserID(ctx, a.UnionID, a.OpenID, "")
	if err != nil {
		return classify(err, w.cfg.Now(), w.cfg, func(reason string) {
			w.cfg.Logger.Warn("backfill failed", "reason", reason)
		})
	}
	found := make([]store.CorpCustomer, len(infos))
	for i, in := range infos {
		found[i] = store.CorpCustomer{CorpID: in.CorpID, ExternalUserID: in.ExternalUserID}
	}
	links, err := w.cfg.Store.LinkExisting(ctx, a.UnionID, found)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return river.JobCancel(err)
		}
		return fmt.Errorf("link existing customers: %w", err)
	}
	logLinks(w.cfg.Logger, "link created", links, "backfill")
	return nil
}

// renewWorker re-registers unmatched fans whose pending_ids are about to
// expire. It runs periodically and only uses spare quota: nothing while bulk
// registrations are queued, and at most half of what is left in the tightest
// window.
type renewWorker struct {
	river.WorkerDefaults[store.RenewArgs]
	cfg PipelineConfig
}

func (w *renewWorker) Work(ctx context.Context, _ *river.Job[store.RenewArgs]) error {
	queued, err := w.cfg.Store.CountQueuedRegistrations(ctx)
	if err != nil {
		return err
	}
	if queued > 0 {
		w.cfg.Logger.Info("renew skipped: registrations queued", "queued", queued)
		return nil
	}
	limit := int64(w.cfg.RenewBatch)
	if w.cfg.Quota != nil {
		limit = min(limit, quota.Spare(w.cfg.Quota.Usage())/2)
	}
	if limit <= 0 {
		return nil
	}
	fans, err := w.cfg.Store.FansToRenew(ctx, w.cfg.Now().Add(w.cfg.RenewBefore), int(limit))
	if err != nil {
		return err
	}
	if len(fans) == 0 {
		return nil
	}
	res, err := w.cfg.Store.RegisterFans(ctx, fans, store.RegisterOpts{Priority: PriorityRenew, Renew: true})
	if err != nil {
		return err
	}
	w.cfg.Logger.Info("renewing pending_ids", "fans", len(fans), "queued", res.Queued)
	return nil
}
