package fakeclock_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/internal/fakeclock"
)

var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

func TestClock(t *testing.T) {
	t.Parallel()

	t.Run("StandsStillUntilMoved", func(t *testing.T) {
		t.Parallel()
		c := fakeclock.New(t0)
		require.Equal(t, t0, c.Now())
		require.Equal(t, t0, c.Now())
		c.Advance(90 * time.Minute)
		require.Equal(t, t0.Add(90*time.Minute), c.Now())
		c.Set(t0.Add(-time.Hour))
		require.Equal(t, t0.Add(-time.Hour), c.Now())
	})

	t.Run("AdvanceNegativePanics", func(t *testing.T) {
		t.Parallel()
		c := fakeclock.New(t0)
		require.PanicsWithValue(t, "fakeclock: Advance with a negative duration; use Set to go back",
			func() { c.Advance(-time.Second) })
		require.Equal(t, t0, c.Now())
	})

	t.Run("SleepMovesTheClockInsteadOfWaiting", func(t *testing.T) {
		t.Parallel()
		c := fakeclock.New(t0)
		require.NoError(t, c.Sleep(context.Background(), time.Hour))
		require.Equal(t, t0.Add(time.Hour), c.Now())
		require.NoError(t, c.Sleep(context.Background(), -time.Hour))
		require.Equal(t, t0.Add(time.Hour), c.Now())
	})

	t.Run("SleepReturnsCtxErrWithoutMoving", func(t *testing.T) {
		t.Parallel()
		c := fakeclock.New(t0)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.ErrorIs(t, c.Sleep(ctx, time.Hour), context.Canceled)
		require.Equal(t, t0, c.Now())
	})

	t.Run("SafeForConcurrentUse", func(t *testing.T) {
		t.Parallel()
		c := fakeclock.New(t0)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 100 {
					c.Advance(time.Second)
					_ = c.Now()
				}
			})
		}
		wg.Wait()
		require.Equal(t, t0.Add(800*time.Second), c.Now())
	})
}
