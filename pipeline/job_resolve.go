package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/riverqueue/river"

	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
)

// resolveWorker turns one customer's external_userid into a pending_id through
// the Coalescer (concurrent jobs share batch calls) and records the answer,
// which links the customer to a registered fan with the same pending_id.
type resolveWorker struct {
	river.WorkerDefaults[ResolveArgs]
	cfg   Config
	store resolveStore
}

type resolveStore interface {
	// RecordResolution stores what WeCom answered for a customer and links it
	// to every fan holding the same live pending_id, in one transaction.
	RecordResolution(ctx context.Context, r store.Resolution) ([]store.Link, error)
}

func (w *resolveWorker) Work(ctx context.Context, job *river.Job[ResolveArgs]) error {
	a := job.Args
	pendingID, err := w.cfg.Coalescer.Resolve(ctx, a.CorpID, a.ChatID, a.ExternalUserID)
	// Right after an add WeCom may not know the relationship yet (§9 #5), so
	// the first answer that is 84061 or empty waits once. That counts
	// answers, not attempts or snoozes: a transient error or a rate-limit
	// snooze before it must not use the grace up, so spending it is marked
	// in the job's metadata.
	unknownYet := (err == nil && pendingID == "") || wecom.IsNotCustomerYet(err)
	if unknownYet && !graceUsed(job.Metadata) {
		if err := river.MetadataSet(ctx, metaGraceUsed, true); err != nil {
			return fmt.Errorf("mark grace of event %d: %w", a.EventID, err)
		}
		return river.JobSnooze(w.cfg.NotCustomerYetDelay)
	}
	res := store.Resolution{
		CorpID: a.CorpID, ExternalUserID: a.ExternalUserID, ChatID: a.ChatID, UserID: a.UserID,
		EventID: a.EventID, PendingID: pendingID,
	}
	switch {
	case err != nil && wecom.IsNotCustomerYet(err):
		res.Reason = "not a customer (84061) after one delayed retry"
	case err != nil:
		return classify(err, w.cfg.Now(), w.cfg, func(reason string) {
			res.Failed = true
			res.Reason = reason
			if _, rerr := w.store.RecordResolution(ctx, res); rerr != nil {
				w.cfg.Logger.Error("record failed resolution", "event_id", a.EventID, "err", rerr)
			}
		})
	case pendingID == "":
		res.Reason = "no pending_id after one delayed retry"
	}
	links, err := w.store.RecordResolution(ctx, res)
	if err != nil {
		return fmt.Errorf("record resolution of event %d: %w", a.EventID, err)
	}
	logLinks(w.cfg.Logger, "link created", links, "resolve")
	return nil
}

// endLinkWorker marks a customer's links inactive after a del event.
type endLinkWorker struct {
	river.WorkerDefaults[EndLinkArgs]
	cfg   Config
	store endLinkStore
}

type endLinkStore interface {
	// EndLinks marks the active links of a customer inactive.
	EndLinks(ctx context.Context, e store.EndLink) ([]store.Link, error)
}

func (w *endLinkWorker) Work(ctx context.Context, job *river.Job[EndLinkArgs]) error {
	a := job.Args
	links, err := w.store.EndLinks(ctx, store.EndLink(a))
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			return river.JobCancel(err)
		}
		return fmt.Errorf("end links of event %d: %w", a.EventID, err)
	}
	logLinks(w.cfg.Logger, "link ended", links, "end_link")
	return nil
}

// metaGraceUsed is the job metadata key set when a resolve spent its one
// delayed retry for a fresh add.
const metaGraceUsed = "grace_used"

// graceUsed reports whether the job already spent its delayed retry.
func graceUsed(metadata []byte) bool {
	var m struct {
		GraceUsed bool `json:"grace_used"`
	}
	return len(metadata) > 0 && json.Unmarshal(metadata, &m) == nil && m.GraceUsed
}
