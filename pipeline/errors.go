package pipeline

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/pendinglink/pendinglink/store"
)

// failStore records that work gave up for good.
type failStore interface {
	RecordResolution(ctx context.Context, r store.Resolution) ([]store.Link, error)
	UpdateEventState(ctx context.Context, id int64, state, reason string) error
	FailFan(ctx context.Context, unionID, reason string) error
}

var _ river.ErrorHandler = (*Pipeline)(nil)

// HandleError implements river.ErrorHandler. On a job's last attempt River
// discards it; the event or fan it worked for is then marked failed with the
// reason, so nothing stays pending forever without one and an operator can
// find and re-drive it. Earlier attempts are left to River's retry policy.
func (p *Pipeline) HandleError(ctx context.Context, job *rivertype.JobRow, err error) *river.ErrorHandlerResult {
	if job.Attempt >= job.MaxAttempts {
		p.giveUp(ctx, job, fmt.Sprintf("gave up after %d attempts: %v", job.Attempt, err))
	}
	return nil
}

// HandlePanic implements river.ErrorHandler, like HandleError.
func (p *Pipeline) HandlePanic(ctx context.Context, job *rivertype.JobRow, panicVal any, _ string) *river.ErrorHandlerResult {
	p.cfg.Logger.ErrorContext(ctx, "job panicked", "job_id", job.ID, "kind", job.Kind, "attempt", job.Attempt, "panic", fmt.Sprint(panicVal))
	if job.Attempt >= job.MaxAttempts {
		p.giveUp(ctx, job, fmt.Sprintf("gave up after %d attempts: panic: %v", job.Attempt, panicVal))
	}
	return nil
}

// giveUp records reason on what job worked for.
func (p *Pipeline) giveUp(ctx context.Context, job *rivertype.JobRow, reason string) {
	var err error
	switch job.Kind {
	case ResolveArgs{}.Kind():
		var a ResolveArgs
		if err = json.Unmarshal(job.EncodedArgs, &a); err == nil {
			_, err = p.cfg.Store.RecordResolution(ctx, store.Resolution{
				CorpID: a.CorpID, ExternalUserID: a.ExternalUserID, ChatID: a.ChatID, UserID: a.UserID,
				EventID: a.EventID, Failed: true, Reason: reason,
			})
		}
	case EndLinkArgs{}.Kind():
		var a EndLinkArgs
		if err = json.Unmarshal(job.EncodedArgs, &a); err == nil {
			err = p.cfg.Store.UpdateEventState(ctx, a.EventID, store.EventFailed, reason)
		}
	case ChatMembersArgs{}.Kind():
		var a ChatMembersArgs
		if err = json.Unmarshal(job.EncodedArgs, &a); err == nil {
			err = p.cfg.Store.UpdateEventState(ctx, a.EventID, store.EventFailed, reason)
		}
	case RegisterArgs{}.Kind():
		var a RegisterArgs
		if err = json.Unmarshal(job.EncodedArgs, &a); err == nil {
			err = p.cfg.Store.FailFan(ctx, a.UnionID, reason)
		}
	}
	p.cfg.Logger.WarnContext(ctx, "job discarded after its last attempt", "job_id", job.ID, "kind", job.Kind, "reason", reason)
	if err != nil {
		p.cfg.Logger.ErrorContext(ctx, "record discarded job", "job_id", job.ID, "kind", job.Kind, "err", err)
	}
}
