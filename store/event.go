package store

import (
	"fmt"
	"time"
)

// Event kinds, the closed set a callback is classified into. They match the
// kinds of package wecom and are the keys of [Status.EventsByType].
const (
	KindAddExternalContact     = "add_external_contact"
	KindAddHalfExternalContact = "add_half_external_contact"
	KindEditExternalContact    = "edit_external_contact"
	KindDelExternalContact     = "del_external_contact"
	KindDelFollowUser          = "del_follow_user"
	KindTransferFail           = "transfer_fail"
	KindAddMember              = "add_member"
	KindDelMember              = "del_member"
	KindChatCreate             = "chat_create"
	KindChatDismiss            = "chat_dismiss"
	// KindIgnored is an authentic event pendinglink does not act on. It is
	// kept with its raw plaintext so that nothing WeCom sends is lost.
	KindIgnored = "ignored"
)

var kinds = map[string]bool{
	KindAddExternalContact: true, KindAddHalfExternalContact: true, KindEditExternalContact: true,
	KindDelExternalContact: true, KindDelFollowUser: true, KindTransferFail: true,
	KindAddMember: true, KindDelMember: true, KindChatCreate: true, KindChatDismiss: true, KindIgnored: true,
}

// SourceDeleteByTransfer is the Source of a del_external_contact sent when
// the customer moved to a colleague (在职继承): the customer is still held.
const SourceDeleteByTransfer = "DELETE_BY_TRANSFER"

// Event states. SaveEvent sets the first three; the workers set the rest.
const (
	// EventPending: jobs were enqueued with the event and have not finished.
	EventPending = "pending"
	// EventRecorded: kept for the record, nothing to do.
	EventRecorded = "recorded"
	// EventIgnored: an event of KindIgnored.
	EventIgnored = "ignored"
	// EventResolved: its customers were resolved (and matched where possible).
	EventResolved = "resolved"
	// EventUnmatched: resolved, but no registered fan matched.
	EventUnmatched = "unmatched"
	// EventFailed: its jobs gave up; Reason says why.
	EventFailed = "failed"
)

var eventStates = map[string]bool{
	EventPending: true, EventRecorded: true, EventIgnored: true,
	EventResolved: true, EventUnmatched: true, EventFailed: true,
}

// Limits checked by [Event.Validate]. Every field and member of an event is
// parsed out of Raw, so MaxRawLen is what bounds an event: the other limits
// only keep a bug upstream from filling the disk, and are set so that no
// authentic event within Raw's cap fails them (a 5xx for it would only make
// WeCom retry until it gives up, and the event would be lost).
const (
	// MaxDedupKeyLen bounds Event.DedupKey in bytes. The key is indexed, so
	// package wecom hashes it to a fixed 67 bytes.
	MaxDedupKeyLen = 256
	// MaxFieldLen bounds each string field (ids, Event, ChangeType, Reason,
	// each member id) in bytes: a field of an authentic event may be as long
	// as Raw.
	MaxFieldLen = MaxRawLen
	// MaxMembers bounds len(Event.Members), and MaxRawLen their total bytes.
	// A customer group holds a few hundred members at most (500), and
	// every member gets a job.
	MaxMembers = 10000
	// MaxRawLen bounds Event.Raw in bytes.
	MaxRawLen = 1 << 20
)

// Event is one authentic callback from WeCom, decrypted and classified by
// the HTTP layer. Its DedupKey is unique across stored events: WeCom retries
// a callback with the same key, and a retry is not stored twice.
type Event struct {
	// ID is set by the store when the event is inserted.
	ID int64
	// DedupKey identifies the event across WeCom's retries (built by package
	// wecom from decrypted fields). Required.
	DedupKey string
	// CorpID is the ToUserName of the decrypted event. It is opaque: used for
	// grouping, never for authorisation.
	CorpID string
	// ReceiveID is the receive id found in the ciphertext.
	ReceiveID string
	// Kind is one of the Kind constants. Required.
	Kind string
	// Event and ChangeType are the raw Event and ChangeType elements.
	Event, ChangeType string
	// UserID is the staff member's userid, ExternalUserID the customer's
	// external_userid and ChatID the customer group, when the kind has them.
	UserID, ExternalUserID, ChatID string
	// Source is the Source element of del_external_contact
	// (SourceDeleteByTransfer), "" otherwise.
	Source string
	// Members are the chat member ids of add_member and del_member events.
	Members []string
	// CreateTime is WeCom's CreateTime (second resolution).
	CreateTime time.Time
	// Raw is the decrypted plaintext, always kept. Required.
	Raw []byte
	// State is set by the store: EventPending when jobs were enqueued,
	// EventRecorded when there is nothing to do, EventIgnored for
	// KindIgnored; later EventResolved, EventUnmatched or EventFailed.
	State string
	// Reason says why an event is ignored or failed.
	Reason string
	// ReceivedAt is set by the store from Config.Now.
	ReceivedAt time.Time
}

// Validate reports whether e can be stored. The error wraps ErrInvalid.
func (e *Event) Validate() error {
	switch {
	case e == nil:
		return fmt.Errorf("%w: event is nil", ErrInvalid)
	case e.DedupKey == "":
		return fmt.Errorf("%w: event dedup key is required", ErrInvalid)
	case len(e.DedupKey) > MaxDedupKeyLen:
		return fmt.Errorf("%w: event dedup key is longer than %d bytes", ErrInvalid, MaxDedupKeyLen)
	case e.Kind == "":
		return fmt.Errorf("%w: event kind is required", ErrInvalid)
	case !kinds[e.Kind]:
		return fmt.Errorf("%w: unknown event kind %q (classify unknown events as %q)", ErrInvalid, truncate(e.Kind), KindIgnored)
	case len(e.Raw) == 0:
		return fmt.Errorf("%w: event raw plaintext is required", ErrInvalid)
	case len(e.Raw) > MaxRawLen:
		return fmt.Errorf("%w: event raw plaintext is longer than %d bytes", ErrInvalid, MaxRawLen)
	case len(e.Members) > MaxMembers:
		return fmt.Errorf("%w: event has more than %d members", ErrInvalid, MaxMembers)
	}
	for _, f := range []struct{ name, v string }{
		{"corp id", e.CorpID}, {"receive id", e.ReceiveID}, {"Event", e.Event},
		{"ChangeType", e.ChangeType}, {"user id", e.UserID}, {"external user id", e.ExternalUserID},
		{"chat id", e.ChatID}, {"reason", e.Reason}, {"source", e.Source},
	} {
		if len(f.v) > MaxFieldLen {
			return fmt.Errorf("%w: event %s is longer than %d bytes", ErrInvalid, f.name, MaxFieldLen)
		}
	}
	total := 0
	for _, m := range e.Members {
		if m == "" {
			return fmt.Errorf("%w: event member id is empty", ErrInvalid)
		}
		if total += len(m); total > MaxRawLen {
			return fmt.Errorf("%w: event member ids are longer than %d bytes in all", ErrInvalid, MaxRawLen)
		}
	}
	return nil
}

// truncate keeps an unexpected value short enough to put in an error.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// initialState is the state SaveEvent gives a new event: pending exactly
// when the job policy enqueued jobs for it.
func initialState(e *Event, hasJobs bool) string {
	switch {
	case e.Kind == KindIgnored:
		return EventIgnored
	case hasJobs:
		return EventPending
	}
	return EventRecorded
}

// Status is a snapshot of what the store has seen, for /v1/status. Event
// counters are totals since the database was created: pruning old events
// does not lower them.
type Status struct {
	// EventsReceived counts unique events stored, of every kind.
	EventsReceived int64
	// EventsDuplicate counts deliveries that repeated a stored event.
	EventsDuplicate int64
	// EventsIgnored counts unique events of KindIgnored.
	EventsIgnored int64
	// EventsByType counts unique events by Kind (KindIgnored included);
	// kinds never received are absent.
	EventsByType map[string]int64
	// QueuePending counts River jobs not yet finished: available,
	// scheduled, retryable, pending or running.
	QueuePending int64
}
