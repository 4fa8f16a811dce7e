package handlers

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Counting a large database takes long: /v1/status reads about a minute on
// SQLite with ten million fans. A page polling every few seconds must not
// recount each time, nor should each open tab add a count of its own. A
// snapshot keeps the last answer for every caller that asks for cached
// counts (?cached=1): it is reused while fresh, returned at once while a
// single background count replaces it once stale, and waited for only when
// there is none yet.

// Snapshot freshness: an answer is fresh for snapshotMinAge, or for
// snapshotCostFactor times as long as it took to count, whichever is
// longer, so that counting never takes more than a tenth of the time.
const (
	snapshotMinAge     = 5 * time.Second
	snapshotCostFactor = 10
	// snapshotTimeout bounds a background count.
	snapshotTimeout = 10 * time.Minute
)

// snapshot is the last answer of load, shared by its callers.
type snapshot[T any] struct {
	load   func(ctx context.Context) (T, error)
	now    func() time.Time
	logger *slog.Logger
	what   string

	mu       sync.Mutex
	val      T
	at       time.Time // when the count started; zero: none yet
	took     time.Duration
	counting chan struct{} // closed when the running count ends; nil: none
	err      error         // of the last count, given to those who waited for it
}

// newSnapshot keeps load's answers; what names them in the log.
func newSnapshot[T any](what string, now func() time.Time, logger *slog.Logger, load func(ctx context.Context) (T, error)) *snapshot[T] {
	return &snapshot[T]{load: load, now: now, logger: logger, what: what}
}

// get returns the snapshot and when it was counted, starting a count when it
// is stale and waiting for it only when there is no snapshot yet.
func (s *snapshot[T]) get(ctx context.Context) (T, time.Time, error) {
	s.mu.Lock()
	have := !s.at.IsZero()
	if have && s.now().Sub(s.at) < max(snapshotMinAge, snapshotCostFactor*s.took) {
		v, at := s.val, s.at
		s.mu.Unlock()
		return v, at, nil
	}
	done := s.counting
	if done == nil {
		done = make(chan struct{})
		s.counting = done
		// The count outlives this request: others share it.
		go s.count(context.WithoutCancel(ctx), done)
	}
	if have {
		v, at := s.val, s.at
		s.mu.Unlock()
		return v, at, nil
	}
	s.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		var zero T
		return zero, time.Time{}, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at.IsZero() {
		var zero T
		return zero, time.Time{}, s.err
	}
	return s.val, s.at, nil
}

// snapshotSlowRead is how long a fresh read may take before callers that
// did not ask for cached counts get the shared snapshot too: with ten
// million fans a fresh count of /v1/status takes most of a minute, and
// every caller recounting would overload the database.
const snapshotSlowRead = time.Second

// fresh answers a caller that did not ask for cached counts: a fresh read,
// which also becomes the snapshot, unless reads have become slow (the last
// one took snapshotSlowRead or more); then the shared snapshot answers, and
// cached says so.
func (s *snapshot[T]) fresh(ctx context.Context) (v T, at time.Time, cached bool, err error) {
	s.mu.Lock()
	slow := !s.at.IsZero() && s.took >= snapshotSlowRead
	s.mu.Unlock()
	if slow {
		v, at, err = s.get(ctx)
		return v, at, true, err
	}
	start := s.now()
	if v, err = s.load(ctx); err != nil {
		return v, at, false, err
	}
	s.mu.Lock()
	if !start.Before(s.at) {
		s.val, s.at, s.took = v, start, s.now().Sub(start)
	}
	s.mu.Unlock()
	return v, start, false, nil
}

func (s *snapshot[T]) count(ctx context.Context, done chan struct{}) {
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	start := s.now()
	v, err := s.load(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
	if err != nil {
		s.logger.Warn("counting for the status page failed; the last counts stay", "counts", s.what, "err", err)
	} else {
		s.val, s.at, s.took = v, start, s.now().Sub(start)
	}
	s.counting = nil
	close(done)
}
