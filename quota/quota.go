// Package quota counts calls against rolling windows: the Limiter that keeps
// a process under a quota, and the arithmetic that answers "how much is
// spare" and "how long do n more calls take". The WeCom client, the
// pipeline and the import's ETA all use it, so the rules live in one place.
//
// It imports none of pendinglink's packages; the counters' persistence is
// the Store interface, which the store package implements.
package quota

import (
	"fmt"
	"math"
	"time"
)

// Usage is a window's current use: Used of Limit calls in the last Length.
type Usage struct {
	Length time.Duration
	// Limit is what this process may use: the configured limit less the
	// share Config.Reserve keeps for other apps, or less what WeCom's
	// refusals showed others use (External).
	Limit int64
	Used  int64
	// External is set while WeCom's refusals (45009) show that another app
	// spends this quota; SpentUntil is then when the window frees.
	External   bool
	SpentUntil time.Time
	// Pace is the least time between two calls the limiter spaces them by
	// (Config.Smooth), 0 without pacing. TimeFor counts it.
	Pace time.Duration
}

// Error is returned, without any call made, when a Limiter does not allow
// a call now.
type Error struct {
	Key     string        // the limiter's key
	Window  time.Duration // length of the window that is full (the shortest window when Pacing)
	Limit   int64         // that window's limit
	Pacing  bool          // the windows have room, but Smooth pacing asks for a gap
	RetryAt time.Time     // the earliest time a call will be allowed
}

// Error returns a message like
// "quota unionid_to_pending_id: 1h0m0s window full (limit 100000), retry at 2025-01-01T10:01:00Z".
func (e *Error) Error() string {
	at := e.RetryAt.UTC().Format(time.RFC3339)
	if e.Pacing {
		return fmt.Sprintf("quota %s: paced, retry at %s", e.Key, at)
	}
	return fmt.Sprintf("quota %s: %s window full (limit %d), retry at %s", e.Key, e.Window, e.Limit, at)
}

// Spare returns how many calls every window still has room for: the
// smallest Limit-Used, never below 0. With no windows nothing limits the
// calls, and Spare returns math.MaxInt64.
func Spare(us []Usage) int64 {
	spare := int64(math.MaxInt64)
	for _, u := range us {
		if !u.SpentUntil.IsZero() {
			return 0 // WeCom refuses calls until SpentUntil
		}
		spare = min(spare, max(u.Limit-u.Used, 0))
	}
	return spare
}

// Rate returns the fastest rate, in calls per second, that every window
// sustains for good: the smallest Limit/Length. It is 0 with no windows
// (no limit).
func Rate(us []Usage) float64 {
	rate := 0.0
	for _, u := range us {
		if u.Length <= 0 || u.Limit <= 0 {
			continue
		}
		if r := float64(u.Limit) / u.Length.Seconds(); rate == 0 || r < rate {
			rate = r
		}
	}
	return rate
}

// TimeFor returns how long n more calls take when no window may be
// exceeded: each window lets its spare calls go at once (none while WeCom
// holds it spent) and the rest at Limit per Length, so a few calls are not
// slowed by a monthly cap and many are not promised more than it allows;
// and no faster than one per Pace.
// The result saturates at the largest time.Duration.
func TimeFor(us []Usage, n int64) time.Duration {
	secs := 0.0
	for _, u := range us {
		secs = max(secs, float64(n)*u.Pace.Seconds())
		if u.Length <= 0 || u.Limit <= 0 {
			continue
		}
		spare := max(u.Limit-u.Used, 0)
		if !u.SpentUntil.IsZero() {
			spare = 0 // WeCom refuses calls until it frees the window
		}
		if over := n - spare; over > 0 {
			secs = max(secs, float64(over)*u.Length.Seconds()/float64(u.Limit))
		}
	}
	if secs >= float64(math.MaxInt64)/float64(time.Second) {
		return math.MaxInt64
	}
	return time.Duration(secs * float64(time.Second))
}

// CallsWithin is TimeFor's inverse: how many calls finish within d. Each
// window allows its spare calls (none while WeCom holds it spent) plus d's
// share of its Limit per Length, and the pace one per Pace; the smallest of
// those. With no windows, or none that binds below math.MaxInt64, it
// returns math.MaxInt64.
func CallsWithin(us []Usage, d time.Duration) int64 {
	d = max(d, 0)
	n := float64(math.MaxInt64)
	for _, u := range us {
		if u.Pace > 0 {
			n = min(n, float64(d/u.Pace))
		}
		if u.Length <= 0 || u.Limit <= 0 {
			continue
		}
		spare := float64(max(u.Limit-u.Used, 0))
		if !u.SpentUntil.IsZero() {
			spare = 0
		}
		// In float64: a limit set huge to mean "no limit" would overflow.
		n = min(n, spare+float64(u.Limit)*d.Seconds()/u.Length.Seconds())
	}
	if n >= float64(math.MaxInt64) {
		return math.MaxInt64
	}
	return int64(n)
}
