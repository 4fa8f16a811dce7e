package store

import (
	"context"
	"fmt"
	"time"
)

// PendingIDLifetime is how long WeCom keeps a pending_id valid.
const PendingIDLifetime = 90 * 24 * time.Hour

// Resolution is what WeCom answered for one customer of a dealer corp.
type Resolution struct {
	CorpID         string `json:"corp_id"`
	ExternalUserID string `json:"external_userid"`
	// ChatID is set when the customer was resolved as a member of a group chat.
	ChatID string `json:"chat_id,omitempty"`
	// UserID is the staff member who added the customer, if known.
	UserID string `json:"user_id,omitempty"`
	// PendingID is "" when WeCom returned none.
	PendingID string `json:"pending_id,omitempty"`
	// EventID is the event that asked, if any.
	EventID int64 `json:"event_id,omitempty"`
	// State is set by the store: "resolved", "matched", "unmatched" or "failed".
	State string `json:"state"`
	// Failed marks a resolution that gave up; Reason says why.
	Failed bool   `json:"-"`
	Reason string `json:"reason,omitempty"`
	// ResolvedAt is set by the store.
	ResolvedAt time.Time `json:"resolved_at"`
}

// Resolution states.
const (
	ResolutionResolved  = "resolved"
	ResolutionMatched   = "matched"
	ResolutionUnmatched = "unmatched"
	ResolutionFailed    = "failed"
)

// Link says a fan and a dealer's customer are the same person. It is unique
// per (UnionID, CorpID, ExternalUserID); an ended link is kept, inactive.
type Link struct {
	ID             int64      `json:"id"`
	UnionID        string     `json:"unionid"`
	OpenID         string     `json:"openid"`
	PendingID      string     `json:"pending_id"`
	CorpID         string     `json:"corp_id"`
	ExternalUserID string     `json:"external_userid"`
	UserID         string     `json:"user_id,omitempty"`
	ChatID         string     `json:"chat_id,omitempty"`
	Active         bool       `json:"active"`
	MatchedAt      time.Time  `json:"matched_at"`
	EndedAt        *time.Time `json:"ended_at,omitempty"`
	EndReason      string     `json:"end_reason,omitempty"`
}

// EndLink describes a removal: del_external_contact, del_follow_user,
// del_member or a chat's dismissal. With EventID set, the stored event says
// what was removed and the other fields are not used.
type EndLink struct {
	EventID        int64
	CorpID         string
	ExternalUserID string
	UserID         string
	// ChatID with Members is a del_member; ChatID alone a dismissal.
	ChatID  string
	Members []string
}

// CorpCustomer is a customer of one dealer corp.
type CorpCustomer struct {
	CorpID         string `json:"corp_id"`
	ExternalUserID string `json:"external_userid"`
}

// FanInput is a fan to register.
type FanInput struct {
	UnionID string `json:"unionid"`
	OpenID  string `json:"openid"`
	// Priority is the brand's priority of the fan, 1 (lowest) to 100; 0
	// keeps the fan's (50 for a new one). Bulk registrations, renewals and
	// checks go highest first.
	Priority int `json:"priority,omitempty"`
	// LastActive is when the fan was last active, as the brand knows it;
	// zero is unknown. Within a priority, fans active on a later UTC day are
	// registered and renewed first. RegisterFans keeps the newest it was
	// given: zero or an older time leaves the stored one (a stale import
	// does not make a fan look idle); UpdateFan sets it as given.
	LastActive time.Time `json:"last_active_at,omitzero"`
}

// Fan priorities.
const (
	MinFanPriority     = 1
	DefaultFanPriority = 50
	MaxFanPriority     = 100
)

// MaxClockSkew is how far after now a last-active time may be: a clock a
// little ahead of ours is tolerated, a time beyond is a caller's bug.
const MaxClockSkew = 5 * time.Minute

// ValidateAt is Validate, and also rejects a LastActive more than
// MaxClockSkew after now, or before 1970.
func (f FanInput) ValidateAt(now time.Time) error {
	if err := f.Validate(); err != nil {
		return err
	}
	if f.LastActive.IsZero() {
		return nil
	}
	return checkLastActive(f.LastActive, now)
}

func checkLastActive(t, now time.Time) error {
	switch {
	case t.Before(time.Unix(0, 0)):
		return fmt.Errorf("%w: last_active_at must be after 1970", ErrInvalid)
	case t.After(now.Add(MaxClockSkew)):
		return fmt.Errorf("%w: last_active_at must not be in the future", ErrInvalid)
	}
	return nil
}

// activeDay is the UTC day (since 1970) of a last-active time in unix ms,
// the recency the queue orders by; 0 stands for unknown.
func activeDay(ms int64) int64 { return ms / (24 * time.Hour).Milliseconds() }

// Validate reports whether f can be stored; the error wraps ErrInvalid.
func (f FanInput) Validate() error {
	switch {
	case f.UnionID == "" || f.OpenID == "":
		return fmt.Errorf("%w: unionid and openid are required", ErrInvalid)
	case len(f.UnionID) > 128 || len(f.OpenID) > 128:
		return fmt.Errorf("%w: unionid and openid must be at most 128 bytes", ErrInvalid)
	case f.Priority != 0 && (f.Priority < MinFanPriority || f.Priority > MaxFanPriority):
		return fmt.Errorf("%w: priority must be from %d to %d", ErrInvalid, MinFanPriority, MaxFanPriority)
	case !printableASCII(f.UnionID) || !printableASCII(f.OpenID):
		// WeChat ids are ASCII; anything else (NUL, invalid UTF-8, the U+FFFD
		// that JSON decoding puts in its place) is a caller's bug, not an id.
		return fmt.Errorf("%w: unionid and openid must be printable ASCII without spaces", ErrInvalid)
	}
	return nil
}

func printableASCII(s string) bool {
	for i := range len(s) {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// Registration queue classes (RegisterOpts.Priority, QueuedFan.Class):
// interactive fans go first, then bulk registrations and renewals by the
// fan's priority.
const (
	QueueInteractive = 1
	QueueBulk        = 3
	QueueRenew       = 4
)

// RegisterOpts says how RegisterFans queues work.
type RegisterOpts struct {
	// Priority is the queue class: QueueInteractive, QueueBulk or
	// QueueRenew; any other value is QueueBulk.
	Priority int
	// Renew re-registers fans whose pending_id is still live.
	Renew bool
	// NoJob stores the fans but does not queue them: the caller registers
	// them now.
	NoJob bool
}

// RegisterResult counts what RegisterFans did.
type RegisterResult struct {
	// Queued counts fans that need registering (with NoJob) or that joined
	// the registration queue.
	Queued int
	// Skipped counts fans that hold a live pending_id or are queued already.
	Skipped int
}

// QueuedFan is a fan waiting in the registration queue.
type QueuedFan struct {
	FanInput
	Class    int
	QueuedAt time.Time
}

// Fan states.
const (
	FanNew        = "new"
	FanRegistered = "registered"
	FanFailed     = "failed"
)

// FanDetail is a fan with its pending_ids and links.
type FanDetail struct {
	UnionID  string `json:"unionid"`
	OpenID   string `json:"openid"`
	Priority int    `json:"priority"`
	// LastActiveAt is when the fan was last active, nil if unknown.
	LastActiveAt *time.Time `json:"last_active_at,omitempty"`
	State        string     `json:"state"`
	LastError    string     `json:"last_error,omitempty"`
	// PendingID is the newest live pending_id, "" if none.
	PendingID string `json:"pending_id,omitempty"`
	// ExpiresAt is when PendingID stops matching.
	ExpiresAt  *time.Time     `json:"expires_at,omitempty"`
	PendingIDs []FanPendingID `json:"pending_ids"`
	Links      []Link         `json:"links"`
	CreatedAt  time.Time      `json:"created_at"`
}

// FanPendingID is one pending_id WeCom issued for a fan.
type FanPendingID struct {
	PendingID string    `json:"pending_id"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CustomerDetail is what is known of a dealer's customer.
type CustomerDetail struct {
	CorpID         string       `json:"corp_id"`
	ExternalUserID string       `json:"external_userid"`
	Resolutions    []Resolution `json:"resolutions"`
	Links          []Link       `json:"links"`
}

// LinkFilter selects links for FindLinks, newest first.
type LinkFilter struct {
	UnionID, CorpID, ExternalUserID string
	// Since keeps links matched at or after this time.
	Since time.Time
	// BeforeID continues a listing: only links with a smaller id.
	BeforeID int64
	// Limit defaults to 100.
	Limit int
}

// OutboxItem is one notification of a link change, waiting for delivery.
type OutboxItem struct {
	ID     int64
	LinkID int64
	// Kind is OutboxLinkCreated or OutboxLinkEnded.
	Kind string
	// Link is the link as it was when the change happened.
	Link Link
	// OccurredAt is when the change happened.
	OccurredAt time.Time
	// Attempts counts delivery attempts so far.
	Attempts int
	// LastError is the error of the last failed attempt, "" if none.
	LastError string
	// claim is the claimed_until ClaimOutbox set (Unix ms), 0 for an item
	// not claimed.
	claim int64
}

// Outbox kinds.
const (
	OutboxLinkCreated = "link_created"
	OutboxLinkEnded   = "link_ended"
)

// Pipeline counters, added to Status.
type PipelineStatus struct {
	EventsResolved, EventsPending, EventsFailed, EventsUnmatched int64
	FansRegistered, FansValid, FansExpiring, FansExpired         int64
	LinksTotal, LinksActive                                      int64
	// FansQueued counts the fans in the registration queue.
	FansQueued int64
	// FailureReasons counts failed events by reason (the ten most common).
	FailureReasons map[string]int64
}

// RecordResolution stores r (one row per corp, customer and chat) and links
// the customer to every fan whose live pending_id equals r.PendingID. Links
// created or re-activated are returned; replaying the same resolution creates
// nothing. The event's state moves on in the same transaction.
func (db *DB) RecordResolution(ctx context.Context, r Resolution) ([]Link, error) {
	return db.submitResolution(ctx, r)
}

// EndLinks records a removal in the follows and ends the active links of
// every customer it leaves held by nobody, returning them. A customer still
// followed by another staff member or still in one of the dealer's chats
// keeps its link.
func (db *DB) EndLinks(ctx context.Context, e EndLink) ([]Link, error) {
	return db.eng.endLinks(ctx, db.jobs(), e, db.cfg.Now())
}

// RecordChatMembers records the customers found in a chat after its
// creation event (eventID): they are members from that event's time, and
// each gets the resolve jobs an add_member of them would. No member leaves
// the event resolved.
func (db *DB) RecordChatMembers(ctx context.Context, eventID int64, members []string) error {
	return db.eng.recordChatMembers(ctx, db.jobs(), eventID, members, db.cfg.Now())
}

// RecordFanPendingID stores a pending_id issued for a fan and links it to
// every customer already resolved to it (no new WeCom call). The policy's
// PendingIDJobs are queued in the same transaction. When the fan still held
// a live pending_id, the answer is counted in RenewalObservations. Returns
// ErrNotFound for an unknown fan.
func (db *DB) RecordFanPendingID(ctx context.Context, unionID, pendingID string) ([]Link, error) {
	if pendingID == "" {
		return nil, fmt.Errorf("%w: empty pending_id", ErrInvalid)
	}
	return db.eng.recordFanPendingID(ctx, db.jobs(), unionID, pendingID, db.cfg.Now())
}

// LinkExisting links a fan to customers unionid_to_external_userid reported
// for it and marks the fan checked. The customers are held from now on (by
// an unnamed staff member, unless known holders hold them already), so
// the link ends when a staff member removes the customer.
func (db *DB) LinkExisting(ctx context.Context, unionID string, found []CorpCustomer) ([]Link, error) {
	return db.RecordCheck(ctx, unionID, found, 0)
}

// FailFan records that a fan's registration failed for good.
func (db *DB) FailFan(ctx context.Context, unionID, reason string) error {
	return db.eng.failFan(ctx, unionID, truncateReason(reason), db.cfg.Now())
}

// RegisterFans stores fans (updating an openid that changed) and puts each
// fan that holds no live pending_id (every fan, with Renew) in the
// registration queue, unless it is queued already. Fans are validated
// first; an invalid one writes nothing.
func (db *DB) RegisterFans(ctx context.Context, fans []FanInput, opts RegisterOpts) (RegisterResult, error) {
	now := db.cfg.Now()
	for i, f := range fans {
		if err := f.ValidateAt(now); err != nil {
			return RegisterResult{}, fmt.Errorf("fan %d: %w", i, err)
		}
	}
	if opts.Priority != QueueInteractive && opts.Priority != QueueRenew {
		opts.Priority = QueueBulk
	}
	return db.eng.registerFans(ctx, fans, opts, now)
}

// NextFans returns up to limit fans from the head of the registration
// queue: interactive ones first, then by the fan's priority (highest
// first), renewals before first registrations among equals, then the fans
// last active on a later UTC day (unknown last), oldest queued first.
// It does not take them out: a pending_id or a failure does (or
// RequeueFan puts one back at the end of its place).
func (db *DB) NextFans(ctx context.Context, limit int) ([]QueuedFan, error) {
	if limit <= 0 {
		return nil, nil
	}
	return db.eng.nextFans(ctx, limit)
}

// RequeueFan puts a queued fan back behind the others of its priority and
// class after a transient failure, noting reason; other fans go first.
func (db *DB) RequeueFan(ctx context.Context, unionID, reason string) error {
	return db.eng.requeueFan(ctx, unionID, truncateReason(reason), db.cfg.Now())
}

// QueuedFans counts the fans in the registration queue by class.
func (db *DB) QueuedFans(ctx context.Context) (map[int]int64, error) {
	return db.eng.queuedFans(ctx)
}

// SetFanPriority changes a fan's priority (MinFanPriority to
// MaxFanPriority). Errors: ErrInvalid, ErrNotFound.
func (db *DB) SetFanPriority(ctx context.Context, unionID string, priority int) error {
	return db.UpdateFan(ctx, unionID, FanUpdate{Priority: &priority})
}

// FanUpdate is what UpdateFan changes; nil fields are kept.
type FanUpdate struct {
	// Priority is MinFanPriority to MaxFanPriority.
	Priority *int
	// LastActive replaces the fan's last-active time, older or not: this
	// is a correction, unlike RegisterFans, which keeps the newest.
	LastActive *time.Time
}

// UpdateFan changes a fan's priority or last-active time; a queued fan
// takes its new place at once. Errors: ErrInvalid, ErrNotFound.
func (db *DB) UpdateFan(ctx context.Context, unionID string, u FanUpdate) error {
	now := db.cfg.Now()
	switch {
	case u.Priority == nil && u.LastActive == nil:
		return fmt.Errorf("%w: nothing to change", ErrInvalid)
	case u.Priority != nil && (*u.Priority < MinFanPriority || *u.Priority > MaxFanPriority):
		return fmt.Errorf("%w: priority must be from %d to %d", ErrInvalid, MinFanPriority, MaxFanPriority)
	case u.LastActive != nil:
		if err := checkLastActive(*u.LastActive, now); err != nil {
			return err
		}
	}
	return db.eng.updateFan(ctx, unionID, u, now)
}

// FindFan returns a fan with its pending_ids and links, or ErrNotFound.
func (db *DB) FindFan(ctx context.Context, unionID string) (*FanDetail, error) {
	return db.eng.findFan(ctx, unionID, db.cfg.Now())
}

// FindLinks lists links newest first.
func (db *DB) FindLinks(ctx context.Context, f LinkFilter) ([]Link, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	return db.eng.findLinks(ctx, f)
}

// FindCustomer returns a customer's resolutions and links, or ErrNotFound.
func (db *DB) FindCustomer(ctx context.Context, corpID, externalUserID string) (*CustomerDetail, error) {
	return db.eng.findCustomer(ctx, corpID, externalUserID)
}

// FansToRenew lists registered fans whose newest pending_id expires before
// the given time, with their priorities: highest priority first, then
// those last active on a later UTC day (unknown last), then unmatched fans
// before linked ones (another dealer may still add them), then the soonest
// to expire. A fan whose
// renewal returned the id it already held is listed again only once that id
// has expired.
func (db *DB) FansToRenew(ctx context.Context, before time.Time, limit int) ([]FanInput, error) {
	return db.eng.fansToRenew(ctx, before, db.cfg.Now(), limit)
}

// StrandedFans lists fans stored for an interactive registration that
// was never settled nor queued, and unchanged since before: the process
// that called WeCom for them died before it could queue the fan again.
func (db *DB) StrandedFans(ctx context.Context, before time.Time, limit int) ([]FanInput, error) {
	return db.eng.strandedFans(ctx, before, limit)
}

// RenewalObservations counts what WeCom answered re-registrations made
// while the fan still held a live pending_id (protocol reference §9 #10):
// whether WeCom gives the same id back until it expires decides whether
// renewing ahead of expiry is worth a call.
type RenewalObservations struct {
	// SameID counts answers with the id the fan held.
	SameID int64
	// NewID counts answers with an id the fan did not hold.
	NewID int64
}

// RenewalObservations returns the counts RecordFanPendingID keeps: every
// pending_id recorded for a fan that held a live one is counted, in the
// same transaction, as the same id or a new one. The counts are the
// database's, shared by every instance.
func (db *DB) RenewalObservations(ctx context.Context) (RenewalObservations, error) {
	return db.eng.renewalObservations(ctx)
}

// HasAvailableJobs reports whether queue holds at least atLeast jobs ready
// to run that no worker has taken yet.
func (db *DB) HasAvailableJobs(ctx context.Context, queue string, atLeast int) (bool, error) {
	return db.eng.hasAvailableJobs(ctx, queue, max(atLeast, 1))
}

// NextOutbox returns the oldest undelivered notification of a link, or ErrNotFound.
func (db *DB) NextOutbox(ctx context.Context, linkID int64) (*OutboxItem, error) {
	return db.eng.nextOutbox(ctx, linkID)
}

// ClaimOutbox claims the oldest undelivered notification of a link for
// lease and returns it: until MarkOutbox or the lease's end, no other
// sender (in this process or another) gets it, nor anything after it.
// Errors: ErrNotFound when nothing is pending, ErrClaimed while another
// sender holds the link's head.
func (db *DB) ClaimOutbox(ctx context.Context, linkID int64, lease time.Duration) (*OutboxItem, error) {
	return db.eng.claimOutbox(ctx, linkID, db.cfg.Now(), lease)
}

// MarkOutbox records a delivery attempt of item and ends its claim:
// errMsg == "" means delivered. A failure is recorded only while item's
// claim (from ClaimOutbox) still holds the row: a sender whose lease ended
// must not free the claim of the one that took over.
func (db *DB) MarkOutbox(ctx context.Context, item *OutboxItem, errMsg string) error {
	return db.eng.markOutbox(ctx, item.ID, item.claim, truncateReason(errMsg), db.cfg.Now())
}

// PipelineStatus returns the pipeline counters for /v1/status.
func (db *DB) PipelineStatus(ctx context.Context, expiringWithin time.Duration) (PipelineStatus, error) {
	return db.eng.pipelineStatus(ctx, db.cfg.Now(), expiringWithin)
}

// jobs is how the engine inserts follow-up jobs inside its transactions.
func (db *DB) jobs() jobInserter {
	return jobInserter{rc: db.river, policy: db.cfg.Jobs}
}

func truncateReason(s string) string {
	if len(s) > MaxFieldLen {
		return s[:MaxFieldLen]
	}
	return s
}
