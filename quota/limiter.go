package quota

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

const (
	defaultBurst  = 10
	bucketLen     = time.Minute
	bucketSeconds = int64(bucketLen / time.Second)
)

// Store persists quota counters so that a restart does not reset them.
// Counters are kept per key in per-minute buckets identified by the bucket's
// start in Unix seconds. store/ implements it.
type Store interface {
	// AddQuota adds n to the counter of bucket bucketUnix under key.
	AddQuota(ctx context.Context, key string, bucketUnix int64, n int64) error
	// LoadQuota returns the counters of key for buckets starting at or after
	// sinceUnix, keyed by bucket start.
	LoadQuota(ctx context.Context, key string, sinceUnix int64) (map[int64]int64, error)
}

// Reserver is a Store that can check every window and count a call in one
// atomic step, so that several processes sharing the counters together
// never exceed a window. The Limiter uses it instead of AddQuota when its
// Store implements it.
type Reserver interface {
	// ReserveQuota adds one call to bucketUnix under key if, for every
	// limit, the calls counted in buckets starting after Limit.After are
	// fewer than Limit.Max; it reports whether it did.
	ReserveQuota(ctx context.Context, key string, bucketUnix int64, limits []Limit) (bool, error)
}

// Limit is one window's check for Reserver: fewer than Max calls in the
// buckets that start after After (Unix seconds).
type Limit struct {
	After, Max int64
}

// reloadEvery is how often a Limiter on a shared store reloads the counters
// other processes add, so that Usage and NextAt stay close to the truth
// (the store itself never lets a window be exceeded).
const reloadEvery = 10 * time.Second

// Window is one rolling quota window: at most Limit calls in any period of
// length Length.
type Window struct {
	Length time.Duration
	Limit  int64
}

// Config configures a Limiter.
type Config struct {
	// Key names the counters in Store, e.g. "unionid_to_pending_id:wwcorp".
	// Required.
	Key string
	// Windows are the rolling windows; each must have a positive Length and
	// Limit. Required.
	Windows []Window
	// Store persists counters. Defaults to nil: memory only.
	Store Store
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Smooth spaces calls evenly: at least shortest-window Length/Limit apart
	// (36 ms for 100,000/h), after an initial Burst. Without it a bulk load
	// spends the whole hour's quota in its first minutes and then waits.
	Smooth bool
	// Sustained, with Smooth, spaces calls at the slowest rate of all the
	// windows (Length/Limit; 357 ms for 7,500,000 in 31 days) instead of the
	// shortest window's: the rate the quota sustains for good. What is
	// registered at that rate comes due for renewal at that rate 90 days
	// later, which the quota can then keep up with; a faster first burst
	// comes due faster than the quota allows, and fans go unrenewed.
	Sustained bool
	// Burst is how many calls Smooth lets through back to back. Defaults to 10.
	Burst int
	// Sleep waits in Wait. Defaults to Sleep.
	Sleep func(ctx context.Context, d time.Duration) error
	// Reserve is the percentage (0–90) of every window left to other apps
	// of the same corp that spend this quota.
	Reserve int
	// Floor is the least share (percent, default 10) of a window's limit a
	// refusal (Refused) may lower this process's limit to.
	Floor int
}

// learnFor is how long a limit learned from WeCom's refusals holds before
// the configured one is tried again.
const learnFor = 24 * time.Hour

// Limiter counts calls against rolling windows so that no window is ever
// exceeded, while the full quota stays usable. Calls are counted in
// per-minute buckets; a window's usage conservatively includes the whole
// bucket that straddles its start, so the count is never lower than WeCom's,
// however WeCom aligns its windows. A Limiter is safe for concurrent use.
type Limiter struct {
	key     string
	windows []Window // ascending Length
	store   Store
	now     func() time.Time
	sleep   func(ctx context.Context, d time.Duration) error
	gap     time.Duration // Smooth pacing gap, 0 without Smooth
	burst   int64

	mu     sync.Mutex
	starts []int64 // bucket starts in Unix seconds, strictly ascending
	cum    []int64 // cum[i] = calls in buckets up to and including i, plus base
	base   int64   // calls in buckets already pruned
	tat    time.Time
	loaded time.Time // when the counters were last read from the store

	// What WeCom's refusals taught, per window (same order as windows).
	learned    []int64     // lowered limit, 0: none
	learnedAt  []time.Time // when it was learned
	spentUntil []time.Time // WeCom refuses calls until then
	floor      int64       // percent
}

// New returns a Limiter, loading the counters of the longest window
// from cfg.Store.
func New(ctx context.Context, cfg Config) (*Limiter, error) {
	if cfg.Key == "" {
		return nil, errors.New("quota: Config.Key is required")
	}
	if len(cfg.Windows) == 0 {
		return nil, errors.New("quota: Config.Windows is required")
	}
	for _, w := range cfg.Windows {
		if w.Length <= 0 || w.Limit <= 0 {
			return nil, fmt.Errorf("quota: Config.Windows: length %s, limit %d: both must be positive", w.Length, w.Limit)
		}
	}
	if cfg.Reserve < 0 || cfg.Reserve > 90 || cfg.Floor < 0 || cfg.Floor > 100 {
		return nil, errors.New("quota: Config.Reserve must be 0–90 and Config.Floor 0–100 (percent)")
	}
	l := &Limiter{
		key:     cfg.Key,
		windows: slices.Clone(cfg.Windows),
		store:   cfg.Store,
		now:     cfg.Now,
		sleep:   cfg.Sleep,
		burst:   int64(cfg.Burst),
		floor:   int64(cfg.Floor),
	}
	if l.floor == 0 {
		l.floor = 10
	}
	for i := range l.windows {
		// The reserve is never ours to use, so it comes off every window.
		l.windows[i].Limit = max(l.windows[i].Limit*int64(100-cfg.Reserve)/100, 1)
	}
	slices.SortFunc(l.windows, func(a, b Window) int { return int(a.Length - b.Length) })
	l.learned = make([]int64, len(l.windows))
	l.learnedAt = make([]time.Time, len(l.windows))
	l.spentUntil = make([]time.Time, len(l.windows))
	if l.now == nil {
		l.now = time.Now
	}
	if l.sleep == nil {
		l.sleep = Sleep
	}
	if l.burst <= 0 {
		l.burst = defaultBurst
	}
	if cfg.Smooth {
		w := l.windows[0]
		l.gap = w.Length / time.Duration(w.Limit)
		if cfg.Sustained {
			for _, w := range l.windows {
				l.gap = max(l.gap, w.Length/time.Duration(w.Limit))
			}
		}
	}
	if l.store != nil {
		if err := l.reload(ctx); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// reload replaces the counters with the store's.
func (l *Limiter) reload(ctx context.Context) error {
	now := l.now()
	since := bucketOf(now.Add(-l.longest() - bucketLen))
	m, err := l.store.LoadQuota(ctx, l.key, since)
	if err != nil {
		return fmt.Errorf("load quota %s: %w", l.key, err)
	}
	starts := make([]int64, 0, len(m))
	for s := range m {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	cum := make([]int64, len(starts))
	var sum int64
	for i, s := range starts {
		sum += m[s]
		cum[i] = sum
	}
	l.mu.Lock()
	l.starts, l.cum, l.base, l.loaded = starts, cum, 0, now
	l.mu.Unlock()
	return nil
}

// limit is window k's limit for this process at now: the configured one,
// or a lower one learned from WeCom's refusals within the last learnFor.
// Caller holds l.mu.
func (l *Limiter) limit(k int, now time.Time) int64 {
	if l.learned[k] > 0 && now.Sub(l.learnedAt[k]) < learnFor {
		return l.learned[k]
	}
	return l.windows[k].Limit
}

// Refused records that WeCom refused a call this Limiter allowed (45009):
// another app of the corp spends the same quota. The shortest window not
// already known to be spent is taken as full until it frees (WeCom blocks
// for a whole window), and its limit for this process is lowered to what
// it had used, never below Config.Floor percent. A second refusal while
// that window is spent blames the next longer one.
func (l *Limiter) Refused() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for k, w := range l.windows {
		if now.Before(l.spentUntil[k]) {
			continue
		}
		used, _ := l.used(now, w.Length)
		l.learned[k] = max(used, w.Limit*l.floor/100, 1)
		l.learnedAt[k] = now
		l.spentUntil[k] = now.Add(w.Length)
		return
	}
}

// limits returns the store-side check of every window for a call at now,
// with the same conservative bucket rule as used. Caller holds l.mu.
func (l *Limiter) limits(now time.Time) []Limit {
	out := make([]Limit, len(l.windows))
	for i, w := range l.windows {
		out[i] = Limit{After: now.Add(-w.Length-bucketLen).Unix() - 1, Max: l.limit(i, now)}
	}
	return out
}

func (l *Limiter) longest() time.Duration { return l.windows[len(l.windows)-1].Length }

func bucketOf(t time.Time) int64 {
	u := t.Unix()
	r := u % bucketSeconds
	if r < 0 {
		r += bucketSeconds
	}
	return u - r
}

func (l *Limiter) cumBefore(i int) int64 {
	if i == 0 {
		return l.base
	}
	return l.cum[i-1]
}

// firstIn returns the index of the first bucket that overlaps the window of
// length w ending at now: a bucket [s, s+1min) overlaps (now-w, now] when
// s > now-w-1min.
func (l *Limiter) firstIn(now time.Time, w time.Duration) int {
	cut := now.Add(-w - bucketLen).UnixNano()
	return sort.Search(len(l.starts), func(i int) bool { return l.starts[i]*int64(time.Second) > cut })
}

func (l *Limiter) used(now time.Time, w time.Duration) (int64, int) {
	i := l.firstIn(now, w)
	if len(l.cum) == 0 {
		return 0, i
	}
	return l.cum[len(l.cum)-1] - l.cumBefore(i), i
}

// check reports the *Error that keeps a call from being made at now,
// or nil. Caller holds l.mu.
func (l *Limiter) check(now time.Time) *Error {
	var qe *Error
	for k, w := range l.windows {
		if now.Before(l.spentUntil[k]) {
			if qe == nil || l.spentUntil[k].After(qe.RetryAt) {
				qe = &Error{Key: l.key, Window: w.Length, Limit: l.limit(k, now), RetryAt: l.spentUntil[k]}
			}
			continue
		}
		limit := l.limit(k, now)
		used, i := l.used(now, w.Length)
		if used < limit {
			continue
		}
		// Find the bucket whose expiry brings usage below the limit.
		excess := used + 1 - limit
		before := l.cumBefore(i)
		j := i + sort.Search(len(l.cum)-i, func(k int) bool { return l.cum[i+k]-before >= excess })
		at := time.Unix(l.starts[j], 0).In(now.Location()).Add(w.Length + bucketLen)
		if qe == nil || at.After(qe.RetryAt) {
			qe = &Error{Key: l.key, Window: w.Length, Limit: limit, RetryAt: at}
		}
	}
	if qe != nil {
		return qe
	}
	if l.gap > 0 {
		if at := l.tat.Add(-time.Duration(l.burst-1) * l.gap); at.After(now) {
			w := l.windows[0]
			return &Error{Key: l.key, Window: w.Length, Limit: w.Limit, Pacing: true, RetryAt: at}
		}
	}
	return nil
}

// add counts one call at now and returns the bucket it went into. Buckets
// only grow at the end: if the clock stepped back, the call joins the newest
// bucket, which expires last, so the count stays conservative.
func (l *Limiter) add(now time.Time) int64 {
	b := bucketOf(now)
	n := len(l.starts)
	if n > 0 && b <= l.starts[n-1] {
		l.cum[n-1]++
		return l.starts[n-1]
	}
	last := l.base
	if n > 0 {
		last = l.cum[n-1]
	}
	l.starts = append(l.starts, b)
	l.cum = append(l.cum, last+1)
	l.prune(now)
	return b
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// prune drops buckets outside the longest window. Caller holds l.mu.
func (l *Limiter) prune(now time.Time) {
	i := l.firstIn(now, l.longest())
	if i == 0 {
		return
	}
	l.base = l.cum[i-1]
	l.starts = l.starts[i:]
	l.cum = l.cum[i:]
}

// undo removes one call from bucket b after the store refused it.
func (l *Limiter) undo(b int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k, ok := slices.BinarySearch(l.starts, b)
	if !ok {
		return
	}
	for i := k; i < len(l.cum); i++ {
		l.cum[i]--
	}
}

// Reserve takes one call if every window allows one now. Otherwise it
// returns a *Error with the time a call will be allowed. With a Store,
// the call is written through before Reserve returns; if that write fails
// the call is not counted and the store's error is returned, so a call is
// never made that a restart would forget.
func (l *Limiter) Reserve(ctx context.Context) error {
	if r, ok := l.store.(Reserver); ok {
		return l.reserveShared(ctx, r)
	}
	l.mu.Lock()
	now := l.now()
	if qe := l.check(now); qe != nil {
		l.mu.Unlock()
		return qe
	}
	b := l.add(now)
	if l.gap > 0 {
		// GCRA: tat is when the paced schedule would next be free; Burst
		// calls may run ahead of it.
		l.tat = later(l.tat, now).Add(l.gap)
	}
	l.mu.Unlock()
	if l.store == nil {
		return nil
	}
	// Write outside the lock so a slow store does not serialise the process.
	if err := l.store.AddQuota(ctx, l.key, b, 1); err != nil {
		l.undo(b)
		return fmt.Errorf("save quota %s: %w", l.key, err)
	}
	return nil
}

// reserveShared is Reserve on a store shared with other processes: the
// local counters pace this process and answer Usage, the store decides.
func (l *Limiter) reserveShared(ctx context.Context, r Reserver) error {
	l.mu.Lock()
	stale := l.now().Sub(l.loaded) >= reloadEvery
	l.mu.Unlock()
	if stale {
		if err := l.reload(ctx); err != nil {
			return err
		}
	}
	l.mu.Lock()
	now := l.now()
	if qe := l.check(now); qe != nil {
		l.mu.Unlock()
		return qe
	}
	if l.gap > 0 {
		l.tat = later(l.tat, now).Add(l.gap)
	}
	lims := l.limits(now)
	l.mu.Unlock()

	ok, err := r.ReserveQuota(ctx, l.key, bucketOf(now), lims)
	if err != nil {
		return fmt.Errorf("reserve quota %s: %w", l.key, err)
	}
	if !ok {
		// Other processes used the window: learn how much, and when it frees.
		if err := l.reload(ctx); err != nil {
			return err
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if qe := l.check(now); qe != nil {
			return qe
		}
		// The store saw a call the reload did not yet: try again shortly.
		w := l.windows[0]
		return &Error{Key: l.key, Window: w.Length, Limit: w.Limit, RetryAt: now.Add(time.Second)}
	}
	l.mu.Lock()
	l.add(now)
	l.mu.Unlock()
	return nil
}

// NextAt returns when a call may next be made: now if one may be made now.
func (l *Limiter) NextAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if qe := l.check(now); qe != nil {
		// Pacing may still apply once the windows free up.
		at := qe.RetryAt
		if l.gap > 0 {
			at = later(at, l.tat.Add(-time.Duration(l.burst-1)*l.gap))
		}
		return at
	}
	return now
}

// Wait blocks until a call is allowed, then reserves it. It returns ctx's
// error if ctx ends first, or the store's error.
func (l *Limiter) Wait(ctx context.Context) error {
	return l.WaitUpTo(ctx, -1)
}

// WaitUpTo is Wait that gives up with the *Error when the wait would be
// longer than maxWait (maxWait < 0: no bound), so a caller can defer the
// work instead of holding a worker.
func (l *Limiter) WaitUpTo(ctx context.Context, maxWait time.Duration) error {
	for {
		err := l.Reserve(ctx)
		var qe *Error
		if !errors.As(err, &qe) {
			return err
		}
		before := l.now()
		d := qe.RetryAt.Sub(before)
		if maxWait >= 0 && d > maxWait {
			return qe
		}
		if err := l.sleep(ctx, max(d, 0)); err != nil {
			return err
		}
		if d > 0 && !l.now().After(before) {
			// The clock did not move while we slept (a stopped test clock):
			// waiting again would wait forever.
			return qe
		}
	}
}

// Usage returns each window's length, limit and calls counted now, shortest
// window first.
func (l *Limiter) Usage() []Usage {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	out := make([]Usage, len(l.windows))
	for i, w := range l.windows {
		used, _ := l.used(now, w.Length)
		out[i] = Usage{Length: w.Length, Limit: l.limit(i, now), Used: used, Pace: l.gap,
			External: l.learned[i] > 0 && now.Sub(l.learnedAt[i]) < learnFor}
		if now.Before(l.spentUntil[i]) {
			out[i].SpentUntil = l.spentUntil[i]
		}
	}
	return out
}

// Sleep waits d or until ctx ends, and then returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
