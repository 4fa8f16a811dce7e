package wecomtest

import "time"

// Quota is a call limit per fixed window on the fake clock: the clock hour,
// and the calendar day and month in China time (UTC+8), which is how WeCom
// most likely counts. A call beyond any limit is answered 45009 until that
// window ends. A zero field takes the API's documented limit; a negative
// one means no limit.
//
// Fixed windows are looser than any rolling window, so a client whose
// rolling limiter keeps within the same numbers never sees 45009.
//
// A call counts when it carries a valid upstream token and is not itself
// answered 45009; injected faults do not count.
type Quota struct {
	Hour, Day, Month int
}

func (q Quota) withDefaults(d Quota) Quota {
	if q.Hour == 0 {
		q.Hour = d.Hour
	}
	if q.Day == 0 {
		q.Day = d.Day
	}
	if q.Month == 0 {
		q.Month = d.Month
	}
	return q
}

// quotaCounter counts calls in the current hour, day and month windows.
type quotaCounter struct {
	limit                 Quota
	loc                   *time.Location
	hourKey, dayKey, mKey int64
	hour, day, month      int
}

func newQuotaCounter(limit Quota) quotaCounter {
	return quotaCounter{limit: limit, loc: time.FixedZone("UTC+8", 8*3600), hourKey: -1, dayKey: -1, mKey: -1}
}

// take counts one call at now and reports whether it is within every limit.
// A refused call is not counted.
func (q *quotaCounter) take(now time.Time) bool {
	t := now.In(q.loc)
	y, m, d := t.Date()
	hk := now.Unix() / 3600
	if now.Unix() < 0 {
		hk = (now.Unix() - 3599) / 3600 // floor, for clocks set before 1970
	}
	dk := int64(y)*10000 + int64(m)*100 + int64(d)
	mk := int64(y)*100 + int64(m)
	if hk != q.hourKey {
		q.hourKey, q.hour = hk, 0
	}
	if dk != q.dayKey {
		q.dayKey, q.day = dk, 0
	}
	if mk != q.mKey {
		q.mKey, q.month = mk, 0
	}
	over := func(n, limit int) bool { return limit >= 0 && n >= limit }
	if over(q.hour, q.limit.Hour) || over(q.day, q.limit.Day) || over(q.month, q.limit.Month) {
		return false
	}
	q.hour++
	q.day++
	q.month++
	return true
}

// SpendPendingQuota counts n unionid_to_pending_id calls made now by
// another app of the same corp, as WeCom would: they share the corp's
// quota. It returns how many fitted within the limits.
func (s *Server) SpendPendingQuota(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Clock.Now()
	spent := 0
	for range n {
		if !s.pquota.take(now) {
			break
		}
		spent++
	}
	return spent
}
