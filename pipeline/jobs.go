package pipeline

import (
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/pendinglink/pendinglink/store"
)

// Queues the pipeline's jobs go to. Resolve jobs get their own queue with
// many workers, because each waits in a batch for company; registrations get
// theirs so that a large import never delays a resolve.
const (
	QueueDefault  = river.QueueDefault
	QueueResolve  = "resolve"
	QueueRegister = "register"
)

// PriorityBackfill is the River priority (1 runs first) of the legacy
// backfill jobs: they use what is left.
const PriorityBackfill = 4

// NotifyMaxAttempts is how often a webhook delivery is tried. River's
// backoff grows to days long before the last attempt.
const NotifyMaxAttempts = 100

// ResolveArgs asks a worker to resolve one customer of an event to a
// pending_id and match it against the registered fans.
type ResolveArgs struct {
	EventID        int64  `json:"event_id"`
	CorpID         string `json:"corp_id"`
	ExternalUserID string `json:"external_userid"`
	UserID         string `json:"user_id,omitempty"`
	ChatID         string `json:"chat_id,omitempty"`
}

// Kind implements river.JobArgs. Kinds are stored in the jobs table: never
// rename one.
func (ResolveArgs) Kind() string { return "resolve" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (ResolveArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: QueueResolve} }

// EndLinkArgs asks a worker to end the links a removal leaves held by
// nobody: a staff member's (external_userid), chat members' (chat_id and
// members) or a whole chat's (chat_id alone). The stored event decides; the
// other fields say what it was, for operators reading the job.
type EndLinkArgs struct {
	EventID        int64    `json:"event_id"`
	CorpID         string   `json:"corp_id"`
	ExternalUserID string   `json:"external_userid"`
	UserID         string   `json:"user_id,omitempty"`
	ChatID         string   `json:"chat_id,omitempty"`
	Members        []string `json:"members,omitempty"`
}

// Kind implements river.JobArgs.
func (EndLinkArgs) Kind() string { return "end_link" }

// RegisterArgs asks a worker to turn a fan's unionid+openid into a pending_id.
type RegisterArgs struct {
	UnionID string `json:"unionid" river:"unique"`
	OpenID  string `json:"openid"`
}

// Kind implements river.JobArgs.
func (RegisterArgs) Kind() string { return "register" }

// BackfillArgs asks a worker to find customers the dealers already have for
// a fan (unionid_to_external_userid) and link them. Nothing queues it any
// more (the reconcile job does this work); its worker stays for jobs
// queued by earlier versions.
type BackfillArgs struct {
	UnionID string `json:"unionid"`
	OpenID  string `json:"openid"`
}

// Kind implements river.JobArgs.
func (BackfillArgs) Kind() string { return "backfill" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (BackfillArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueRegister, Priority: PriorityBackfill}
}

// RenewArgs is the periodic job that re-registers expiring fans.
type RenewArgs struct{}

// Kind implements river.JobArgs.
func (RenewArgs) Kind() string { return "renew" }

// PruneArgs is the periodic job that drops quota counters older than every
// quota window.
type PruneArgs struct{}

// Kind implements river.JobArgs.
func (PruneArgs) Kind() string { return "prune" }

// NotifyArgs asks a worker to deliver a link's pending notifications.
type NotifyArgs struct {
	LinkID int64 `json:"link_id"`
}

// Kind implements river.JobArgs.
func (NotifyArgs) Kind() string { return "notify" }

// InsertOpts implements river.JobArgsWithInsertOpts. A webhook is retried
// until it acknowledges.
func (NotifyArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: NotifyMaxAttempts}
}

// ResolveFetchCooldown is the least time between two fetches of resolve
// jobs. Each instance that inserts resolve jobs notifies the one that works
// them (PostgreSQL NOTIFY), and at River's default of 100 ms those
// notifications cut the stream into small fetches that the Coalescer's
// window then sends as emptier calls: a burst spread over three instances
// cost 1.7 times the calls of one. At 200 ms it costs the same
// (BENCHMARKS.md, batching across instances), for at most 100 ms more
// latency.
const ResolveFetchCooldown = 200 * time.Millisecond

// Queues returns River's queue configuration for the pipeline:
// resolveWorkers resolve jobs at once (they mostly wait in a batch), 32
// registrations (they mostly wait for quota) and 10 of everything else.
func Queues(resolveWorkers int) map[string]river.QueueConfig {
	return map[string]river.QueueConfig{
		QueueDefault:  {MaxWorkers: 10},
		QueueResolve:  {MaxWorkers: resolveWorkers, FetchCooldown: ResolveFetchCooldown},
		QueueRegister: {MaxWorkers: 32},
	}
}

// PeriodicJobs returns the pipeline's periodic jobs: renewal every
// renewInterval, the reconcile job every reconcileInterval and at start,
// and the quota prune daily and at start.
func PeriodicJobs(renewInterval, reconcileInterval time.Duration) []*river.PeriodicJob {
	var out []*river.PeriodicJob
	for _, p := range periodics(renewInterval, reconcileInterval) {
		out = append(out, river.NewPeriodicJob(river.PeriodicInterval(p.every), p.job, &river.PeriodicJobOpts{ID: p.id, RunOnStart: p.onStart}))
	}
	return out
}

// periodic is one periodic job.
type periodic struct {
	id      string
	every   time.Duration
	onStart bool
	job     river.PeriodicJobConstructor
}

func periodics(renewInterval, reconcileInterval time.Duration) []periodic {
	return []periodic{
		{"renew", renewInterval, false, func() (river.JobArgs, *river.InsertOpts) {
			return RenewArgs{}, &river.InsertOpts{UniqueOpts: onlyOne}
		}},
		{"reconcile", reconcileInterval, true, func() (river.JobArgs, *river.InsertOpts) {
			return ReconcileArgs{}, &river.InsertOpts{UniqueOpts: onlyOne}
		}},
		{"prune", 24 * time.Hour, true, func() (river.JobArgs, *river.InsertOpts) { return PruneArgs{}, nil }},
	}
}

// onlyOne keeps a periodic job from being inserted while one of its kind is
// still queued or running: two reconcile runs at once would check the same
// fans twice.
var onlyOne = river.UniqueOpts{ByState: unfinished}

// unfinished are the states of a job not yet done.
var unfinished = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRetryable,
	rivertype.JobStateRunning, rivertype.JobStateScheduled,
}

// Policy is the pipeline's store.JobPolicy: which jobs follow each write.
type Policy struct {
	// Notify queues a NotifyArgs job with every link notification (set it
	// when a webhook is configured). False keeps notifications in the
	// outbox only.
	Notify bool
}

var _ store.JobPolicy = Policy{}

// EventJobs implements store.JobPolicy: one resolve job per added customer
// (per member for add_member), a chat_members job for a new chat (whose
// event names no member), one end_link job per removal (del_member and a
// chat's dismissal included), nothing for the other kinds.
func (Policy) EventJobs(ev *store.Event, id int64) []river.InsertManyParams {
	switch ev.Kind {
	case store.KindAddExternalContact, store.KindAddHalfExternalContact:
		return []river.InsertManyParams{{Args: ResolveArgs{
			EventID: id, CorpID: ev.CorpID, ExternalUserID: ev.ExternalUserID, UserID: ev.UserID,
		}}}
	case store.KindAddMember:
		jobs := make([]river.InsertManyParams, 0, len(ev.Members))
		for _, m := range ev.Members {
			jobs = append(jobs, river.InsertManyParams{Args: ResolveArgs{
				EventID: id, CorpID: ev.CorpID, ExternalUserID: m, UserID: ev.UserID, ChatID: ev.ChatID,
			}})
		}
		return jobs
	case store.KindDelExternalContact, store.KindDelFollowUser:
		return []river.InsertManyParams{{Args: EndLinkArgs{
			EventID: id, CorpID: ev.CorpID, ExternalUserID: ev.ExternalUserID, UserID: ev.UserID,
		}}}
	case store.KindDelMember:
		return []river.InsertManyParams{{Args: EndLinkArgs{
			EventID: id, CorpID: ev.CorpID, ChatID: ev.ChatID, Members: ev.Members,
		}}}
	case store.KindChatCreate:
		return []river.InsertManyParams{{Args: ChatMembersArgs{EventID: id, CorpID: ev.CorpID, ChatID: ev.ChatID}}}
	case store.KindChatDismiss:
		return []river.InsertManyParams{{Args: EndLinkArgs{EventID: id, CorpID: ev.CorpID, ChatID: ev.ChatID}}}
	}
	return nil
}

// NotificationJobs implements store.JobPolicy.
func (p Policy) NotificationJobs(l store.Link) []river.InsertManyParams {
	if !p.Notify {
		return nil
	}
	return []river.InsertManyParams{{Args: NotifyArgs{LinkID: l.ID}}}
}

// PendingIDJobs implements store.JobPolicy: none. Customers the dealers
// already have are found by the reconcile job (and at once for an
// interactive registration), not by a job per pending_id, which renewals
// would repeat.
func (Policy) PendingIDJobs(store.FanInput) []river.InsertManyParams { return nil }
