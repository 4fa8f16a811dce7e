package apiclient

import (
	"time"

	"github.com/pendinglink/pendinglink/store"
)

// MaxFansPerBatch caps POST /v1/fans/batch.
const MaxFansPerBatch = 1000

// ErrorResponse is the one shape of every error answer (4xx and 5xx) of
// every route.
type ErrorResponse struct {
	// Error says what is wrong, naming the parameter at fault; a 5xx says
	// only "internal error" (the cause is logged, never sent).
	Error string `json:"error"`
}

// FanResponse is the body of fan endpoints.
type FanResponse struct {
	*store.FanDetail
	// Queued is true when the registration waits for quota or a retry.
	Queued bool `json:"queued,omitempty"`
}

// BatchResponse is the body of POST /v1/fans/batch.
type BatchResponse struct {
	Accepted int `json:"accepted"`
	Queued   int `json:"queued"`
	Skipped  int `json:"skipped"`
}

// LinksResponse is the body of GET /v1/links.
type LinksResponse struct {
	Links []store.Link `json:"links"`
	// NextCursor, when set, fetches the next page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// StatusResponse is the body of GET /v1/status. Its keys are a contract:
// later versions add keys but never rename these.
type StatusResponse struct {
	Events    EventsStatus    `json:"events"`
	Callbacks CallbacksStatus `json:"callbacks"`
	Queue     QueueStatus     `json:"queue"`
	Fans      FansStatus      `json:"fans"`
	Links     LinksStatus     `json:"links"`
	WeCom     WeComStatus     `json:"wecom"`
	Reconcile ReconcileStatus `json:"reconcile"`
	Webhook   WebhookStatus   `json:"webhook"`
	Counted   CountedStatus   `json:"counted"`
}

// CountedStatus says when the database's counts were read: now, or with
// ?cached=1 (Cached) when the shared snapshot that answered was counted.
type CountedStatus struct {
	At     time.Time `json:"at"`
	Cached bool      `json:"cached"`
}

// WebhookStatus is how link notifications are being delivered: Configured
// is false when no webhook URL is set (notifications then stay in the
// outbox, which is not a fault).
type WebhookStatus struct {
	Configured bool `json:"configured"`
	store.OutboxHealth
}

// ReconcileStatus is the newest reconcile sweep's progress (zero values
// when there has been none).
type ReconcileStatus struct {
	Running bool   `json:"running"`
	ID      int64  `json:"id,omitempty"`
	Reason  string `json:"reason,omitempty"` // "requested" or "downtime"
	// Checked counts fans checked so far and Linked the links found;
	// Remaining estimates the fans still to check: those to check at the
	// start less Checked.
	Checked          int64      `json:"checked"`
	Linked           int64      `json:"linked"`
	Remaining        int64      `json:"remaining"`
	RegisteredBefore *time.Time `json:"registered_before,omitempty"`
	StartedAt        *time.Time `json:"started_at,omitempty"`
	FinishedAt       *time.Time `json:"finished_at,omitempty"`
}

// ReconcileRequest is the optional body of POST /v1/reconcile.
type ReconcileRequest struct {
	// RegisteredBefore limits the sweep to fans registered before it;
	// zero means now.
	RegisteredBefore time.Time `json:"registered_before,omitzero"`
}

// ReconcileResponse answers POST /v1/reconcile.
type ReconcileResponse struct {
	// Started is false when a sweep was already running; Sweep is that one.
	Started bool            `json:"started"`
	Sweep   ReconcileStatus `json:"sweep"`
}

// FansStatus counts the brand's fans by the state of their pending_ids.
type FansStatus struct {
	// Registered counts fans WeCom issued a pending_id for.
	Registered int64 `json:"registered"`
	// Valid counts fans holding a pending_id that has not expired.
	Valid int64 `json:"valid"`
	// Expiring counts valid fans whose newest pending_id expires within the renew horizon.
	Expiring int64 `json:"expiring"`
	// Expired counts fans whose every pending_id expired.
	Expired int64 `json:"expired"`
	// Queued counts fans waiting in the registration queue (first
	// registrations, renewals and retries).
	Queued int64 `json:"queued"`
}

// LinksStatus counts links.
type LinksStatus struct {
	Total  int64 `json:"total"`
	Active int64 `json:"active"`
}

// WeComStatus reports the WeCom client's calls, errors and quota.
type WeComStatus struct {
	// Calls counts HTTP requests per API (retries included).
	Calls map[string]int64 `json:"calls"`
	// Errors counts answers with a non-zero errcode, by errcode.
	Errors map[string]int64 `json:"errors"`
	// Quota shows each unionid_to_pending_id window.
	Quota []QuotaWindow `json:"quota"`
	// Blocked lists the APIs a configuration fault blocks: their work waits
	// (it never fails for it) until a probe finds the fault fixed.
	Blocked []BlockedAPI `json:"blocked"`
}

// BlockedAPI is an API blocked by a configuration fault.
type BlockedAPI struct {
	API string `json:"api"`
	// CorpID is the dealer concerned, "" when the whole API is blocked.
	CorpID string `json:"corp_id,omitempty"`
	Code   int    `json:"errcode"`
	// Msg is WeCom's errmsg: for 60020 it names the egress IP to trust.
	Msg string `json:"errmsg"`
	// Fix says where in the WeCom console to fix it.
	Fix         string    `json:"fix"`
	Since       time.Time `json:"since"`
	NextProbeAt time.Time `json:"next_probe_at"`
	Probes      int       `json:"probes"`
}

// QuotaWindow is one rolling quota window.
type QuotaWindow struct {
	Window string `json:"window"`
	Used   int64  `json:"used"`
	// Limit is what pendinglink may use: the configured limit less
	// WECOM_PENDING_QUOTA_RESERVE, or less what other apps were found to use.
	Limit int64 `json:"limit"`
	// ExternalUsage is set while WeCom's 45009 answers show that another app
	// of the corp spends this quota; SpentUntil is when WeCom frees the
	// window it blocked.
	ExternalUsage bool       `json:"external_usage,omitempty"`
	SpentUntil    *time.Time `json:"spent_until,omitempty"`
}

// EventsStatus counts stored callback events.
type EventsStatus struct {
	// Received counts unique authentic events stored, ignored ones included.
	Received int64 `json:"received"`
	// Duplicate counts authentic callbacks whose event was already stored.
	Duplicate int64 `json:"duplicate"`
	// Ignored counts stored events pendinglink does not act on.
	Ignored int64 `json:"ignored"`
	// Resolved counts events whose customers were resolved (matched or not
	// yet), Pending those still being worked, Unmatched those WeCom had no
	// pending_id for, Failed those that gave up (FailureReasons says why).
	Resolved       int64            `json:"resolved"`
	Pending        int64            `json:"pending"`
	Unmatched      int64            `json:"unmatched"`
	Failed         int64            `json:"failed"`
	FailureReasons map[string]int64 `json:"failure_reasons"`
	// ByType counts stored events by kind (change type, chat update or "ignored").
	ByType map[string]int64 `json:"by_type"`
}

// CallbacksStatus counts rejected callbacks since the process started:
// rejections write nothing, so they are not in the database.
type CallbacksStatus struct {
	Rejected map[string]int64 `json:"rejected"`
}

// QueueStatus describes the job queue.
type QueueStatus struct {
	// Pending counts jobs not yet finished (available, scheduled, retrying, running).
	Pending int64 `json:"pending"`
}

// RetryRequest is the body of POST /v1/events/retry and /v1/fans/retry.
// Every field is optional.
type RetryRequest struct {
	// State of the events to re-drive: "failed" (default) or "unmatched"
	// (look their customers up again). Not used for fans.
	State string `json:"state,omitempty"`
	// Reason keeps only those whose reason contains it.
	Reason string `json:"reason,omitempty"`
	// Since and Until bound when the event was received (for a fan: when
	// it last changed).
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	// DryRun only counts.
	DryRun bool `json:"dry_run,omitempty"`
}

// RetryResponse answers a retry: how many matched (and, unless DryRun,
// were re-queued).
type RetryResponse struct {
	Matched int64 `json:"matched"`
	DryRun  bool  `json:"dry_run"`
}

// QuotaResponse is GET /v1/quota: what the WeCom quotas allow and what
// waits for them.
type QuotaResponse struct {
	// APIs are the quota-limited APIs with their windows.
	APIs []QuotaAPI `json:"apis"`
	// LivePendingIDs counts fans holding a live pending_id;
	// ExpiringWithin7Days those whose newest one expires within 7 days.
	LivePendingIDs      int64 `json:"live_pending_ids"`
	ExpiringWithin7Days int64 `json:"expiring_within_7_days"`
	// ExpiringUnrenewed7Days is how many of those (and of the expired ones
	// waiting for renewal) the quota cannot renew within the 7 days, at
	// least: the lowest-priority ones.
	ExpiringUnrenewed7Days int64 `json:"expiring_unrenewed_7_days"`
	// SustainableLiveFans is how many fans the unionid_to_pending_id quota
	// keeps live for good, each renewed once per pending_id lifetime.
	SustainableLiveFans int64 `json:"sustainable_live_fans"`
	// OverCapacity is how many of the live and queued fans the quota cannot
	// keep live: the lowest-priority ones are those left to expire.
	OverCapacity int64 `json:"over_capacity"`
	// Registrations is the registration backlog by class (interactive,
	// bulk, renewal), each done when its last fan is; Checks the
	// unionid_to_external_userid backlog (new fans and the running sweep).
	Registrations []QuotaBacklog `json:"registrations"`
	// ByPriority is the bulk and renewal backlog by the fans' priority,
	// highest first: the order the quota is spent in after interactive
	// registrations.
	ByPriority []QuotaPriorityBacklog `json:"by_priority"`
	Checks     QuotaBacklog           `json:"checks"`
	// Renewal is when renewals start, and what decided it.
	Renewal QuotaRenewal `json:"renewal"`
}

// Renewal policies of QuotaRenewal.Policy.
const (
	RenewalEarly    = "early"
	RenewalAtExpiry = "at_expiry"
)

// QuotaRenewal is when renewals start: PENDINGLINK_RENEW_BEFORE ahead of a
// pending_id's expiry or at it, decided by the setting and, in auto mode,
// by what WeCom answered early renewals.
type QuotaRenewal struct {
	// Mode is PENDINGLINK_RENEW_EARLY: auto, always or never.
	Mode string `json:"mode"`
	// Policy is RenewalEarly or RenewalAtExpiry.
	Policy string `json:"policy"`
	// LearnAfter is PENDINGLINK_RENEW_LEARN_AFTER: same-id answers, with no
	// new id, that turn auto to at_expiry.
	LearnAfter int `json:"learn_after"`
	// Observations count WeCom's answers to renewals of live ids.
	Observations RenewalObservations `json:"observations"`
}

// RenewalObservations count what WeCom answered renewals made while the
// fan's pending_id was live: the id it held, or a new one.
type RenewalObservations struct {
	SameID int64 `json:"same_id"`
	NewID  int64 `json:"new_id"`
}

// QuotaPriorityBacklog is the queued fans of one priority and when the
// quota lets the last of them (and all ahead of them) be registered.
type QuotaPriorityBacklog struct {
	Priority int        `json:"priority"`
	Count    int64      `json:"count"`
	DoneAt   *time.Time `json:"done_at,omitempty"`
}

// QuotaAPI is one API's quota windows.
type QuotaAPI struct {
	API     string        `json:"api"`
	Windows []QuotaWindow `json:"windows"`
}

// QuotaBacklog is queued work and when the quota lets it finish.
type QuotaBacklog struct {
	Name  string `json:"name"`
	Count int64  `json:"count"`
	// DoneAt is when the quota lets the last of it (and all ahead of it)
	// be called; absent when nothing waits.
	DoneAt *time.Time `json:"done_at,omitempty"`
}

// FanPatch is the body of PATCH /v1/fans/{unionid}: one field or both.
type FanPatch struct {
	// Priority is the fan's new priority, 1 (lowest) to 100.
	Priority *int `json:"priority,omitempty"`
	// LastActiveAt replaces when the fan was last active, older or not.
	LastActiveAt *time.Time `json:"last_active_at,omitempty"`
}
