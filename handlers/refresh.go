package handlers

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Defaults of the receive-id refresher.
const (
	// DefaultRefreshInterval is the least time between two refreshes an
	// unknown receive id triggers: a forger sending authentic-looking
	// traffic must not make us call WeCom at its pace.
	DefaultRefreshInterval = 10 * time.Second
	// refreshTimeout bounds a refresh made while a callback waits; WeCom
	// gives up on an answer after 5 s.
	refreshTimeout = 2 * time.Second
)

// shareChangeEvents are the Event elements WeCom sends when an app share
// changes: share_chain_change for 上下游 and share_agent_change for 企业互联
// (doc 90376; the 上下游 name is unconfirmed, so both are watched).
var shareChangeEvents = map[string]bool{"share_chain_change": true, "share_agent_change": true}

// refresher reloads the receive-id allow-list from WeCom (the corps sharing
// the app): at most once per interval, one refresh at a time.
type refresher struct {
	refresh  func(ctx context.Context) error
	interval time.Duration
	now      func() time.Time
	logger   *slog.Logger

	mu   sync.Mutex
	last time.Time     // start of the last refresh
	done chan struct{} // closed when the refresh in flight ends; nil if none
}

// refreshNow refreshes unless one ran within the interval, waiting for a
// refresh already in flight; it reports whether one ran (or was joined).
func (r *refresher) refreshNow(ctx context.Context, why string) bool {
	if r == nil || r.refresh == nil {
		return false
	}
	r.mu.Lock()
	if done := r.done; done != nil {
		r.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
		}
		return true
	}
	if !r.last.IsZero() && r.now().Sub(r.last) < r.interval {
		r.mu.Unlock()
		return false
	}
	r.last = r.now()
	done := make(chan struct{})
	r.done = done
	r.mu.Unlock()

	err := r.refresh(ctx)
	r.mu.Lock()
	r.done = nil
	close(done)
	r.mu.Unlock()
	if err != nil {
		r.logger.Warn("receive-id allow-list refresh failed", "why", why, "err", err)
	} else {
		r.logger.Info("receive-id allow-list refreshed", "why", why)
	}
	return true
}

// refreshLater refreshes in the background, detached from the request.
func (r *refresher) refreshLater(why string) {
	if r == nil || r.refresh == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r.refreshNow(ctx, why)
	}()
}

// isShareChange reports whether an authentic event says an app share
// changed.
func isShareChange(ev string) bool { return shareChangeEvents[ev] }
