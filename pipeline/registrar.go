package pipeline

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
)

// RegistrarLease names the lease of the one registrar of a cluster.
const RegistrarLease = "registrar"

type registrarStore interface {
	// TryLease takes a cluster-wide lease, or returns store.ErrLeaseHeld.
	TryLease(ctx context.Context, name string) (*store.Lease, error)
	// NextFans returns the head of the registration queue.
	NextFans(ctx context.Context, limit int) ([]store.QueuedFan, error)
	// RequeueFan puts a fan back behind the others of its rank.
	RequeueFan(ctx context.Context, unionID, reason string) error
}

// RunRegistrar registers the fans in the registration queue (the fans
// table, store.NextFans), in queue order and as fast as the quota allows,
// while this instance holds the registrar lease; the other instances wait
// to take it over. It returns when ctx ends, after the calls in flight.
//
// One registrar per cluster paces every registration against the one
// quota of the corp, and a queue of ten million fans costs ten million rows
// instead of ten million jobs.
func (p *Pipeline) RunRegistrar(ctx context.Context) {
	for {
		lease, err := p.cfg.Store.TryLease(ctx, RegistrarLease)
		switch {
		case err == nil:
			p.cfg.Logger.InfoContext(ctx, "this instance registers the queued fans")
			p.registerWhileLeased(ctx, lease)
			if err := lease.Release(); err != nil {
				p.cfg.Logger.WarnContext(ctx, "release the registrar lease", "err", err)
			}
		case !errors.Is(err, store.ErrLeaseHeld) && ctx.Err() == nil:
			p.cfg.Logger.WarnContext(ctx, "take the registrar lease", "err", err)
		}
		if p.wait(ctx, p.cfg.LeaseRetry) != nil {
			return
		}
	}
}

// WakeRegistrar tells this instance's registrar that fans were queued, so
// that an idle one does not wait for its next poll.
func (p *Pipeline) WakeRegistrar() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// wait sleeps d, or until WakeRegistrar or ctx ends; it returns ctx's
// error.
func (p *Pipeline) wait(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.cfg.Sleep(ctx, d) }()
	select {
	case <-p.wake:
		cancel()
		<-done
		return nil
	case err := <-done:
		return err
	}
}

// registerWhileLeased is the registrar's loop while it holds lease: it ends when ctx
// ends or the lease is lost, and waits for its calls in flight.
func (p *Pipeline) registerWhileLeased(ctx context.Context, lease *store.Lease) {
	ctx, cancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	defer func() { cancel(); <-watched }()
	go func() {
		defer close(watched)
		for p.cfg.Sleep(ctx, p.cfg.LeaseRetry) == nil {
			if err := lease.Check(ctx); err != nil && ctx.Err() == nil {
				p.cfg.Logger.WarnContext(ctx, "lost the registrar lease; another instance takes over", "err", err)
				cancel()
				return
			}
		}
	}()

	r := &registrar{p: p, inflight: map[string]bool{}, done: map[string]uint64{}, slots: make(chan struct{}, p.cfg.RegisterConcurrency)}
	defer r.calls.Wait()
	for ctx.Err() == nil {
		// The slot is taken before any wait: a fan is chosen only when its
		// call may go, and with one slot no wait moves a fake clock ahead
		// of the call in flight (the simulations' clock).
		select {
		case r.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if !r.ready(ctx) {
			<-r.slots
			continue
		}
		f, err := r.next(ctx)
		if f == nil {
			<-r.slots
			if err != nil && ctx.Err() == nil {
				p.cfg.Logger.WarnContext(ctx, "read the registration queue", "err", err)
			}
			if p.wait(ctx, p.cfg.RegisterPoll) != nil {
				return
			}
			continue
		}
		r.calls.Add(1)
		go func() {
			defer r.calls.Done()
			defer func() { <-r.slots }()
			r.registerOne(ctx, *f)
		}()
	}
}

// ready waits out what keeps the next call from going now (a pause, the
// quota, the calls in flight) and reports whether it may go; false means it
// waited, or ctx ended, and the caller should look again.
func (r *registrar) ready(ctx context.Context) bool {
	p := r.p
	if d := r.takePause(); d > 0 {
		_ = p.cfg.Sleep(ctx, d)
		return false
	}
	if p.cfg.Quota == nil {
		return true
	}
	if d := p.cfg.Quota.NextAt().Sub(p.cfg.Now()); d > 0 {
		// Looked at again every RegisterPoll: other instances spend the
		// quota too, and a fake clock may jump.
		_ = p.wait(ctx, min(d, p.cfg.RegisterPoll))
		return false
	}
	// Never more calls in flight than the windows have room for: the ones
	// launched first, the head of the queue, must get the last calls, not
	// a fan behind them whose call reserved first.
	if n := r.inFlight(); n > 0 && int64(n) >= quota.Spare(p.cfg.Quota.Usage()) {
		_ = p.wait(ctx, min(p.cfg.RegisterPoll, 20*time.Millisecond))
		return false
	}
	return true
}

// registrar is the state of one lease's loop.
type registrar struct {
	p     *Pipeline
	slots chan struct{} // one per call in flight
	calls sync.WaitGroup

	mu       sync.Mutex
	inflight map[string]bool // unionids being registered
	// done holds the fans whose call finished while the queue was being
	// read, by finish number (gen counts finished calls): that read may
	// still list them, and must not take them again.
	done map[string]uint64
	gen  uint64
	// pause is how long to wait before the next call: a back-off, a rate
	// limit or a blocked API. A duration, not a deadline: it is waited
	// with Config.Sleep, in real time or on a fake clock alike.
	pause   time.Duration
	backoff time.Duration // after a transient error; reset by a success
}

// inFlight counts the calls in flight.
func (r *registrar) inFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.inflight)
}

// takePause returns the pause asked for since the last call, and clears it.
func (r *registrar) takePause() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.pause
	r.pause = 0
	return d
}

// pauseFor asks for a pause of at least d before the next call. r.mu must
// be held.
func (r *registrar) pauseFor(d time.Duration) { r.pause = max(r.pause, d) }

// next takes the first queued fan not in flight, or nil when there is none.
func (r *registrar) next(ctx context.Context) (*store.QueuedFan, error) {
	r.mu.Lock()
	n, start := len(r.inflight)+len(r.done), r.gen
	r.mu.Unlock()
	fans, err := r.p.cfg.Store.NextFans(ctx, n+1)
	r.mu.Lock()
	defer r.mu.Unlock()
	for u, g := range r.done {
		if g <= start {
			delete(r.done, u) // finished before this read began: it saw that
		}
	}
	if err != nil {
		return nil, err
	}
	for i := range fans {
		u := fans[i].UnionID
		if _, finished := r.done[u]; !r.inflight[u] && !finished {
			r.inflight[u] = true
			return &fans[i], nil
		}
	}
	return nil, nil
}

// registerOne registers f and decides what its outcome means for the
// queue: a refusal fails the fan (register records it), a full quota or a
// blocked API pauses every call, another error puts the fan back and backs
// off.
func (r *registrar) registerOne(ctx context.Context, f store.QueuedFan) {
	p := r.p
	_, err := p.register(ctx, f.UnionID, f.OpenID)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.inflight, f.UnionID)
	r.gen++
	r.done[f.UnionID] = r.gen
	now := p.cfg.Now()
	switch {
	case err == nil:
		r.backoff = 0
		return
	case ctx.Err() != nil:
		return
	case wecom.IsBlocked(err):
		// A configuration fault: wait for the client's next probe.
		until, _ := wecom.BlockedUntil(err)
		r.pauseFor(max(until.Sub(now), time.Second))
		return
	case wecom.IsRateLimited(err):
		// The quota limiter refused the call, or learnt from WeCom's 45009
		// that the window is spent: NextAt says when to call again. Only
		// without one is there nothing to go by but RateLimitDelay.
		var (
			qe *quota.Error
			ae *wecom.APIError
		)
		learnt := errors.As(err, &qe) || errors.As(err, &ae) && ae.Code == wecom.CodeAPIFreqOutOfLimit
		if p.cfg.Quota == nil || !learnt {
			r.pauseFor(deferFor(err, now, p.cfg.RateLimitDelay))
		}
		return
	case wecom.IsPermanent(err):
		return // register failed the fan
	}
	if _, ok := wecom.RetryAfter(err); ok {
		r.pauseFor(deferFor(err, now, p.cfg.RateLimitDelay))
	} else {
		r.backoff = min(max(2*r.backoff, time.Second), time.Minute)
		r.pauseFor(r.backoff)
	}
	p.cfg.Logger.InfoContext(ctx, "registration put back after a transient error", "err", err)
	if err := p.cfg.Store.RequeueFan(ctx, f.UnionID, err.Error()); err != nil {
		p.cfg.Logger.WarnContext(ctx, "requeue fan", "err", err)
	}
}
