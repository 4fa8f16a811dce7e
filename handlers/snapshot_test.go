package handlers

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/internal/fakeclock"
)

// waitCount waits for the snapshot's running count, if any, to end.
func waitCount[T any](s *snapshot[T]) {
	s.mu.Lock()
	done := s.counting
	s.mu.Unlock()
	if done != nil {
		<-done
	}
}

func TestSnapshot(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC))
	var (
		calls   atomic.Int64
		release = make(chan struct{}, 10)
		fail    atomic.Bool
	)
	s := newSnapshot("test", clock.Now, slog.New(slog.DiscardHandler), func(ctx context.Context) (int64, error) {
		n := calls.Add(1)
		<-release
		if fail.Load() {
			return 0, errors.New("database gone")
		}
		clock.Advance(time.Second) // the count takes a second
		return n, nil
	})
	get := func() (int64, time.Time) {
		t.Helper()
		v, at, err := s.get(t.Context())
		require.NoError(t, err)
		return v, at
	}

	// No snapshot yet: the caller waits for the first count.
	release <- struct{}{}
	v, at := get()
	require.Equal(t, int64(1), v)
	require.True(t, at.Equal(time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)))

	// Fresh for ten times the second it took: shared, not recounted.
	clock.Advance(8 * time.Second)
	v, _ = get()
	require.Equal(t, int64(1), v)
	require.Equal(t, int64(1), calls.Load())

	// Stale: answered at once with the old counts while one count runs for
	// every caller.
	clock.Advance(2 * time.Second)
	v, _ = get()
	require.Equal(t, int64(1), v)
	v, _ = get()
	require.Equal(t, int64(1), v)
	release <- struct{}{}
	waitCount(s)
	require.Equal(t, int64(2), calls.Load())
	v, _ = get()
	require.Equal(t, int64(2), v)

	// A failed count keeps the old counts.
	clock.Advance(time.Minute)
	fail.Store(true)
	release <- struct{}{}
	v, _ = get()
	require.Equal(t, int64(2), v)
	waitCount(s)
	v, _ = get() // stale still: starts another count
	require.Equal(t, int64(2), v)
	fail.Store(false)
	release <- struct{}{}
	waitCount(s)
	v, _ = get()
	require.Equal(t, int64(4), v)
}

func TestSnapshot_FirstCountFails(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC))
	var calls atomic.Int64
	s := newSnapshot("test", clock.Now, slog.New(slog.DiscardHandler), func(ctx context.Context) (int64, error) {
		if calls.Add(1) == 1 {
			return 0, errors.New("database gone")
		}
		return 7, nil
	})
	_, _, err := s.get(t.Context())
	require.EqualError(t, err, "database gone")
	v, _, err := s.get(t.Context())
	require.NoError(t, err)
	require.Equal(t, int64(7), v)
}

// TestSnapshot_FreshUntilSlow: callers that did not ask for cached counts
// get a fresh read, until reads take snapshotSlowRead or more; then the
// shared snapshot answers them too, and says it is cached.
func TestSnapshot_FreshUntilSlow(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC))
	var (
		calls atomic.Int64
		takes atomic.Int64 // how long a read takes, in the fake clock
	)
	s := newSnapshot("test", clock.Now, slog.New(slog.DiscardHandler), func(ctx context.Context) (int64, error) {
		clock.Advance(time.Duration(takes.Load()))
		return calls.Add(1), nil
	})
	fresh := func() (int64, bool) {
		t.Helper()
		v, _, cached, err := s.fresh(t.Context())
		require.NoError(t, err)
		return v, cached
	}
	takes.Store(int64(100 * time.Millisecond))
	for want := int64(1); want <= 2; want++ {
		v, cached := fresh()
		require.Equal(t, want, v, "each caller reads afresh while reads are fast")
		require.False(t, cached)
	}
	takes.Store(int64(2 * time.Second))
	v, cached := fresh() // slow: read afresh once more, and noted
	require.Equal(t, int64(3), v)
	require.False(t, cached)
	v, cached = fresh()
	require.Equal(t, int64(3), v, "now the snapshot answers")
	require.True(t, cached)
	require.Equal(t, int64(3), calls.Load())
}
