package quota_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/internal/fakeclock"
	"github.com/pendinglink/pendinglink/quota"
)

func mustLimiter(t testing.TB, cfg quota.Config) *quota.Limiter {
	t.Helper()
	if cfg.Key == "" {
		cfg.Key = "test"
	}
	l, err := quota.New(context.Background(), cfg)
	require.NoError(t, err)
	return l
}

// requireNeverOver checks that no period of length w.Length holds more than
// w.Limit of the call times: it is enough to check the periods ending at a
// call, since those hold the most calls.
func requireNeverOver(t *testing.T, calls []time.Time, w quota.Window) {
	t.Helper()
	lo := 0
	for hi, c := range calls {
		for !calls[lo].After(c.Add(-w.Length)) {
			lo++
		}
		require.LessOrEqual(t, int64(hi-lo+1), w.Limit, "window %s ending %s", w.Length, c)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	for _, tt := range []struct {
		name string
		cfg  quota.Config
		msg  string
	}{
		{"MissingKey", quota.Config{Windows: []quota.Window{{Length: time.Hour, Limit: 1}, {Length: 24 * time.Hour, Limit: 2}, {Length: 31 * 24 * time.Hour, Limit: 3}}}, "Config.Key"},
		{"NoWindows", quota.Config{Key: "k"}, "Config.Windows"},
		{"ZeroLimit", quota.Config{Key: "k", Windows: []quota.Window{{Length: time.Hour}}}, "Config.Windows"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := quota.New(ctx, tt.cfg)
			require.ErrorContains(t, err, tt.msg)
		})
	}

	t.Run("LoadsTheLongestWindowFromStore", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		store := newMemStore()
		mustLimiter(t, quota.Config{Windows: []quota.Window{{Length: time.Hour, Limit: 1}, {Length: 24 * time.Hour, Limit: 2}, {Length: 31 * 24 * time.Hour, Limit: 3}}, Store: store, Now: clock.Now})
		require.Equal(t, []int64{clock.Now().Add(-31*24*time.Hour - time.Minute).Unix()}, store.sinceAt)
	})
}

func TestLimiter_Reserve(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("AllowsFullLimitThenRefusesOne", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock() // 10:00:00
		l := mustLimiter(t, quota.Config{Key: "k", Windows: []quota.Window{{Length: time.Hour, Limit: 5}}, Now: clock.Now})

		for range 5 {
			require.NoError(t, l.Reserve(ctx))
		}
		err := l.Reserve(ctx)
		var qe *quota.Error
		require.ErrorAs(t, err, &qe)
		require.Equal(t, quota.Error{Key: "k", Window: time.Hour, Limit: 5, RetryAt: clock.Now().Add(61 * time.Minute)}, *qe)
		require.True(t, isQuotaError(err))
		require.EqualValues(t, 5, l.Usage()[0].Used, "a refused call is not counted")
	})

	t.Run("FreesUpExactlyAtRetryAt", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := mustLimiter(t, quota.Config{Windows: []quota.Window{{Length: time.Hour, Limit: 2}}, Now: clock.Now})
		require.NoError(t, l.Reserve(ctx))
		clock.Advance(10 * time.Minute)
		require.NoError(t, l.Reserve(ctx))

		var qe *quota.Error
		require.ErrorAs(t, l.Reserve(ctx), &qe)
		// The oldest call (bucket 10:00) leaves the window at 11:01.
		require.Equal(t, time.Date(2025, 3, 1, 11, 1, 0, 0, time.UTC), qe.RetryAt)
		clock.Advance(qe.RetryAt.Sub(clock.Now()) - time.Nanosecond)
		require.Error(t, l.Reserve(ctx))
		clock.Advance(time.Nanosecond)
		require.NoError(t, l.Reserve(ctx))
		require.Error(t, l.Reserve(ctx), "the 10:10 call is still inside the window")
	})

	t.Run("PartialBucketCountedConservatively", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := mustLimiter(t, quota.Config{Windows: []quota.Window{{Length: time.Hour, Limit: 1}}, Now: clock.Now})
		clock.Advance(30 * time.Second)
		require.NoError(t, l.Reserve(ctx)) // 10:00:30

		// At 11:00:45 a rolling hour no longer holds the 10:00:30 call, but
		// a WeCom window aligned to the minute (10:00–11:00:59) would.
		clock.Advance(time.Hour + 15*time.Second)
		require.Error(t, l.Reserve(ctx))
		clock.Advance(15 * time.Second) // 11:01:00
		require.NoError(t, l.Reserve(ctx))
	})

	t.Run("LongerWindowBlocksAfterShorterFreesUp", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := mustLimiter(t, quota.Config{Key: "k", Windows: []quota.Window{{Length: 24 * time.Hour, Limit: 5}, {Length: time.Hour, Limit: 3}}, Now: clock.Now})
		t0 := clock.Now()
		for range 3 {
			require.NoError(t, l.Reserve(ctx))
		}
		var qe *quota.Error
		require.ErrorAs(t, l.Reserve(ctx), &qe)
		require.Equal(t, time.Hour, qe.Window)
		clock.Advance(61 * time.Minute)
		for range 2 {
			require.NoError(t, l.Reserve(ctx))
		}
		require.ErrorAs(t, l.Reserve(ctx), &qe)
		require.Equal(t, quota.Error{Key: "k", Window: 24 * time.Hour, Limit: 5, RetryAt: t0.Add(24*time.Hour + time.Minute)}, *qe)
	})

	t.Run("NeverOverAnyWindowRandomised", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		windows := []quota.Window{{Length: time.Hour, Limit: 20}, {Length: 24 * time.Hour, Limit: 150}}
		l := mustLimiter(t, quota.Config{Windows: windows, Now: clock.Now})
		rng := rand.New(rand.NewPCG(1, 2))

		var calls []time.Time
		refused := 0
		for clock.Now().Before(newFakeClock().Now().Add(72 * time.Hour)) {
			clock.Advance(time.Duration(rng.Int64N(int64(3 * time.Minute))))
			for range rng.IntN(4) {
				if err := l.Reserve(ctx); err == nil {
					calls = append(calls, clock.Now())
				} else {
					require.True(t, isQuotaError(err))
					refused++
				}
			}
		}
		require.NotZero(t, refused, "the test must push against the limits")
		for _, w := range windows {
			requireNeverOver(t, calls, w)
		}
	})

	t.Run("ConcurrentCallersNeverOver", func(t *testing.T) {
		t.Parallel()
		l := mustLimiter(t, quota.Config{Windows: []quota.Window{{Length: time.Hour, Limit: 50}}, Now: newFakeClock().Now})
		var okCount atomic.Int64
		var wg sync.WaitGroup
		for range 200 {
			wg.Go(func() {
				if l.Reserve(ctx) == nil {
					okCount.Add(1)
				}
			})
		}
		wg.Wait()
		require.EqualValues(t, 50, okCount.Load())
	})
}

func TestLimiter_Store(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("RestartKeepsCounts", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		store := newMemStore()
		cfg := quota.Config{Key: "pending:wwtest", Windows: []quota.Window{{Length: time.Hour, Limit: 5}, {Length: 24 * time.Hour, Limit: 8}, {Length: 31 * 24 * time.Hour, Limit: 20}}, Store: store, Now: clock.Now}
		l1 := mustLimiter(t, cfg)
		for range 3 {
			require.NoError(t, l1.Reserve(ctx))
		}

		clock.Advance(10 * time.Minute)
		l2 := mustLimiter(t, cfg) // a restart
		require.Equal(t, []quota.Usage{
			{Length: time.Hour, Limit: 5, Used: 3}, {Length: 24 * time.Hour, Limit: 8, Used: 3}, {Length: 31 * 24 * time.Hour, Limit: 20, Used: 3},
		}, l2.Usage())
		require.NoError(t, l2.Reserve(ctx))
		require.NoError(t, l2.Reserve(ctx))
		var qe *quota.Error
		require.ErrorAs(t, l2.Reserve(ctx), &qe)
		require.Equal(t, time.Date(2025, 3, 1, 11, 1, 0, 0, time.UTC), qe.RetryAt)

		other := mustLimiter(t, quota.Config{Key: "external:wwtest", Windows: cfg.Windows, Store: store, Now: clock.Now})
		require.Zero(t, other.Usage()[0].Used, "keys are separate")
	})

	t.Run("StoreFailureRefusesAndDoesNotCount", func(t *testing.T) {
		t.Parallel()
		store := newMemStore()
		store.addErr = errors.New("database is locked")
		l := mustLimiter(t, quota.Config{Windows: []quota.Window{{Length: time.Hour, Limit: 5}}, Store: store, Now: newFakeClock().Now})

		err := l.Reserve(ctx)
		require.ErrorContains(t, err, "database is locked")
		require.False(t, isQuotaError(err))
		require.Zero(t, l.Usage()[0].Used)
	})
}

func TestLimiter_NextAt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("NowWhenFree", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := mustLimiter(t, quota.Config{Windows: []quota.Window{{Length: time.Hour, Limit: 2}}, Now: clock.Now})
		require.NoError(t, l.Reserve(ctx))
		require.Equal(t, clock.Now(), l.NextAt())
	})

	t.Run("RetryAtWhenFull", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := mustLimiter(t, quota.Config{Windows: []quota.Window{{Length: time.Hour, Limit: 1}}, Now: clock.Now})
		clock.Advance(90 * time.Second)
		require.NoError(t, l.Reserve(ctx)) // bucket 10:01
		require.Equal(t, time.Date(2025, 3, 1, 11, 2, 0, 0, time.UTC), l.NextAt())
	})

	t.Run("PacingGap", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := mustLimiter(t, quota.Config{Windows: []quota.Window{{Length: time.Hour, Limit: 3600}}, Now: clock.Now, Smooth: true, Burst: 1})
		require.NoError(t, l.Reserve(ctx))
		require.Equal(t, clock.Now().Add(time.Second), l.NextAt())
	})
}

func TestLimiter_Wait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("SleepsUntilFreeThenReserves", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		var slept []time.Duration
		l := mustLimiter(t, quota.Config{
			Windows: []quota.Window{{Length: time.Hour, Limit: 1}}, Now: clock.Now,
			Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); clock.Advance(d); return nil },
		})
		require.NoError(t, l.Wait(ctx))
		require.NoError(t, l.Wait(ctx))
		require.Equal(t, []time.Duration{61 * time.Minute}, slept)
		require.EqualValues(t, 1, l.Usage()[0].Used)
	})

	t.Run("GivesUpWhenTheClockStandsStill", func(t *testing.T) {
		// A test's stopped clock never frees the window: after one sleep
		// the wait returns the refusal instead of sleeping forever.
		t.Parallel()
		sleeps := 0
		l := mustLimiter(t, quota.Config{
			Windows: []quota.Window{{Length: time.Hour, Limit: 1}}, Now: newFakeClock().Now,
			Sleep: func(context.Context, time.Duration) error { sleeps++; return nil },
		})
		require.NoError(t, l.Reserve(ctx))
		var qe *quota.Error
		require.ErrorAs(t, l.Wait(ctx), &qe)
		require.Equal(t, 1, sleeps)
	})

	t.Run("StopsWhenContextEnds", func(t *testing.T) {
		t.Parallel()
		l := mustLimiter(t, quota.Config{Windows: []quota.Window{{Length: time.Hour, Limit: 1}}, Now: newFakeClock().Now})
		require.NoError(t, l.Reserve(ctx))
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		require.ErrorIs(t, l.Wait(cctx), context.Canceled)
	})
}

func TestLimiter_Smooth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("PacesAfterBurst", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := mustLimiter(t, quota.Config{Key: "k", Windows: []quota.Window{{Length: time.Hour, Limit: 3600}}, Now: clock.Now, Smooth: true, Burst: 2})
		t0 := clock.Now()
		require.NoError(t, l.Reserve(ctx))
		require.NoError(t, l.Reserve(ctx))
		var qe *quota.Error
		require.ErrorAs(t, l.Reserve(ctx), &qe)
		require.True(t, qe.Pacing)
		require.True(t, isQuotaError(qe))
		require.Equal(t, t0.Add(time.Second), qe.RetryAt)
		clock.Advance(time.Second)
		require.NoError(t, l.Reserve(ctx))
		require.Error(t, l.Reserve(ctx))
	})

	t.Run("SustainedPacesAtTheSlowestWindow", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		windows := []quota.Window{{Length: time.Hour, Limit: 100}, {Length: 24 * time.Hour, Limit: 480}, {Length: 31 * 24 * time.Hour, Limit: 744}}
		gap := func(sustained bool) time.Duration {
			l := mustLimiter(t, quota.Config{Key: "k", Windows: windows, Now: clock.Now, Smooth: true, Burst: 1, Sustained: sustained})
			require.NoError(t, l.Reserve(ctx))
			return l.NextAt().Sub(clock.Now())
		}
		require.Equal(t, 36*time.Second, gap(false), "the hour's rate")
		require.Equal(t, time.Hour, gap(true), "the month's: 744 in 744 hours")
	})

	t.Run("BulkLoadSpreadsOverTheHourAndUsesItAll", func(t *testing.T) {
		t.Parallel()
		run := func(smooth bool) (firstMinute, firstHour int, calls []time.Time) {
			clock := newFakeClock()
			t0 := clock.Now()
			l := mustLimiter(t, quota.Config{Windows: []quota.Window{{Length: time.Hour, Limit: 3600}}, Now: clock.Now, Smooth: smooth})
			// A greedy caller: call whenever allowed.
			for clock.Now().Before(t0.Add(2 * time.Hour)) {
				if err := l.Reserve(ctx); err != nil {
					clock.Advance(l.NextAt().Sub(clock.Now()))
					continue
				}
				calls = append(calls, clock.Now())
				if clock.Now().Before(t0.Add(time.Minute)) {
					firstMinute++
				}
				if clock.Now().Before(t0.Add(time.Hour)) {
					firstHour++
				}
			}
			return firstMinute, firstHour, calls
		}

		burstMinute, burstHour, _ := run(false)
		require.Equal(t, 3600, burstMinute, "unsmoothed, the hour's quota goes in the first minute")
		require.Equal(t, 3600, burstHour)

		smoothMinute, smoothHour, calls := run(true)
		require.Equal(t, 10+59, smoothMinute, "a burst of 10 at 0s, then one a second from 1s to 59s")
		require.Equal(t, 3600, smoothHour, "pacing still uses the full quota")
		requireNeverOver(t, calls, quota.Window{Length: time.Hour, Limit: 3600})
	})
}

func TestLimiter_Usage(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := mustLimiter(t, quota.Config{Windows: []quota.Window{{Length: 24 * time.Hour, Limit: 10}, {Length: time.Hour, Limit: 3}}, Now: clock.Now})
	require.NoError(t, l.Reserve(context.Background()))
	clock.Advance(2 * time.Hour)
	require.NoError(t, l.Reserve(context.Background()))

	require.Equal(t, []quota.Usage{
		{Length: time.Hour, Limit: 3, Used: 1}, {Length: 24 * time.Hour, Limit: 10, Used: 2},
	}, l.Usage())
}

func TestLimiter_ReserveLeavesAShareToOtherApps(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC))
	l, err := quota.New(t.Context(), quota.Config{Key: "k", Now: clock.Now, Reserve: 20,
		Windows: []quota.Window{{Length: time.Hour, Limit: 10}}})
	require.NoError(t, err)
	for range 8 {
		require.NoError(t, l.Reserve(t.Context()))
	}
	var qe *quota.Error
	require.ErrorAs(t, l.Reserve(t.Context()), &qe, "80 % of 10")
	require.EqualValues(t, 8, l.Usage()[0].Limit)
	_, err = quota.New(t.Context(), quota.Config{Key: "k", Reserve: 95, Windows: []quota.Window{{Length: time.Hour, Limit: 10}}})
	require.Error(t, err)
}

func TestLimiter_RefusedLearnsExternalUsage(t *testing.T) {
	t.Parallel()
	// Another app spent 40 of the hour's 100: WeCom refuses our 61st call.
	clock := fakeclock.New(time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC))
	l, err := quota.New(t.Context(), quota.Config{Key: "k", Now: clock.Now,
		Windows: []quota.Window{{Length: time.Hour, Limit: 100}, {Length: 24 * time.Hour, Limit: 1000}}})
	require.NoError(t, err)
	for range 60 {
		require.NoError(t, l.Reserve(t.Context()))
	}
	l.Refused()

	var qe *quota.Error
	require.ErrorAs(t, l.Reserve(t.Context()), &qe, "no call while WeCom blocks the window")
	require.Equal(t, time.Hour, qe.Window)
	require.Equal(t, clock.Now().Add(time.Hour), qe.RetryAt)
	u := l.Usage()
	require.True(t, u[0].External)
	require.EqualValues(t, 60, u[0].Limit, "the limit learned: what WeCom let us use")
	require.Equal(t, clock.Now().Add(time.Hour), u[0].SpentUntil)
	require.False(t, u[1].External)
	require.Zero(t, quota.Spare(u))

	// The window frees; the learned limit holds for the day: 60 an hour.
	clock.Advance(time.Hour + 2*time.Minute)
	for range 60 {
		require.NoError(t, l.Reserve(t.Context()))
	}
	require.ErrorAs(t, l.Reserve(t.Context()), &qe)
	require.EqualValues(t, 60, qe.Limit)

	// A refusal while the hour is not spent blames the hour again; the
	// floor keeps the limit from collapsing.
	l2, err := quota.New(t.Context(), quota.Config{Key: "k2", Now: clock.Now, Floor: 25,
		Windows: []quota.Window{{Length: time.Hour, Limit: 100}}})
	require.NoError(t, err)
	l2.Refused()
	require.EqualValues(t, 25, l2.Usage()[0].Limit, "never below the floor")
}
