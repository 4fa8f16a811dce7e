package wecom

import (
	"time"

	"github.com/pendinglink/pendinglink/quota"
)

// Documented per-API quotas of the upstream corp (protocol reference §4.4, §4.6, §6).
const (
	PendingIDPerHour      = 100_000   // unionid_to_pending_id, per hour
	PendingIDPerDay       = 480_000   // unionid_to_pending_id, per day
	PendingIDPerMonth     = 7_500_000 // unionid_to_pending_id, per month
	ExternalUserIDPerHour = 20_000    // unionid_to_external_userid, per hour
	ExternalUserIDPerDay  = 240_000   // unionid_to_external_userid, per day
)

// PendingIDWindows returns the windows of unionid_to_pending_id's quota:
// hour calls per hour, day per 24 hours and month per 31 days. Rolling
// windows are at least as strict as calendar ones: every clock hour lies
// inside some rolling hour and every calendar day inside some rolling 24
// hours. The month window is 31 days so that every calendar month, even the
// longest, fits inside one rolling window; then no calendar month can exceed
// the limit, whichever way WeCom counts (calendar month or rolling 30 days).
func PendingIDWindows(hour, day, month int64) []quota.Window {
	return []quota.Window{{Length: time.Hour, Limit: hour}, {Length: 24 * time.Hour, Limit: day}, {Length: 31 * 24 * time.Hour, Limit: month}}
}

// ExternalUserIDWindows returns the windows of unionid_to_external_userid's
// quota: hour calls per hour and day per 24 hours (see PendingIDWindows).
func ExternalUserIDWindows(hour, day int64) []quota.Window {
	return []quota.Window{{Length: time.Hour, Limit: hour}, {Length: 24 * time.Hour, Limit: day}}
}

// PendingIDQuotaKey and ExternalUserIDQuotaKey name the quota counters of
// an upstream corp in the store, so that serve counts and check reads the
// same ones. Stored counters are keyed by them: never change them.
func PendingIDQuotaKey(corpID string) string { return "unionid_to_pending_id:" + corpID }

// ExternalUserIDQuotaKey: see PendingIDQuotaKey.
func ExternalUserIDQuotaKey(corpID string) string { return "unionid_to_external_userid:" + corpID }
