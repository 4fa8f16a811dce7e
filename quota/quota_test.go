package quota_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/quota"
)

func TestError_Error(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 1, 1, 11, 1, 0, 0, time.UTC)
	require.EqualError(t, &quota.Error{Key: "pending", Window: time.Hour, Limit: 100000, RetryAt: at},
		"quota pending: 1h0m0s window full (limit 100000), retry at 2025-01-01T11:01:00Z")
	require.EqualError(t, &quota.Error{Key: "pending", Pacing: true, RetryAt: at},
		"quota pending: paced, retry at 2025-01-01T11:01:00Z")
}

// pending is unionid_to_pending_id's quota with some of it used.
var pending = []quota.Usage{
	{Length: time.Hour, Limit: 100_000, Used: 40_000},
	{Length: 24 * time.Hour, Limit: 480_000, Used: 400_000},
	{Length: 31 * 24 * time.Hour, Limit: 7_500_000, Used: 1_000_000},
}

func TestSpare(t *testing.T) {
	t.Parallel()
	require.EqualValues(t, 60_000, quota.Spare(pending), "the tightest window decides")
	require.EqualValues(t, 0, quota.Spare([]quota.Usage{{Length: time.Hour, Limit: 5, Used: 7}}), "never negative")
	require.EqualValues(t, int64(math.MaxInt64), quota.Spare(nil), "no windows, no limit")
}

func TestRate(t *testing.T) {
	t.Parallel()
	require.InDelta(t, 7_500_000/(31*24*3600.0), quota.Rate(pending), 1e-9, "the month sustains the least")
	require.Zero(t, quota.Rate(nil))
}

func TestTimeFor(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		us   []quota.Usage
		n    int64
		want time.Duration
	}{
		{"NoWindows", nil, 1_000_000, 0},
		{"FitsInEverySpare", pending, 60_000, 0},
		{"HourFull", []quota.Usage{{Length: time.Hour, Limit: 3600, Used: 3600}}, 60, time.Minute},
		// 80,000 is 20,000 over the hour's spare (12 minutes at 100,000/h)
		// and 0 over the day's 80,000 spare.
		{"ShortestWindowBinds", pending, 80_000, 12 * time.Minute},
		// 180,000 is 100,000 over the day's spare: 5 h at 480,000/day.
		{"DayBinds", pending, 180_000, 5 * time.Hour},
		{"SpentBinds", []quota.Usage{{Length: time.Hour, Limit: 100, Used: 10, SpentUntil: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}, 10, 6 * time.Minute},
		{"Saturates", []quota.Usage{{Length: 31 * 24 * time.Hour, Limit: 1}}, math.MaxInt64, math.MaxInt64},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, quota.TimeFor(tt.us, tt.n))
		})
	}
}

func TestCallsWithin(t *testing.T) {
	t.Parallel()
	require.EqualValues(t, int64(math.MaxInt64), quota.CallsWithin(nil, time.Hour), "no windows, no limit")
	require.EqualValues(t, 60_000, quota.CallsWithin(pending, 0), "the spare calls at once")
	// The day's 80,000 spare plus 5 h of 480,000/day.
	require.EqualValues(t, 180_000, quota.CallsWithin(pending, 5*time.Hour))
	require.EqualValues(t, 60, quota.CallsWithin([]quota.Usage{{Pace: time.Minute}}, time.Hour), "one per pace")
	require.EqualValues(t, int64(math.MaxInt64), quota.CallsWithin([]quota.Usage{{Length: time.Hour, Limit: math.MaxInt64 / 2}}, 7*24*time.Hour),
		"a limit set huge does not overflow")
	spent := []quota.Usage{{Length: time.Hour, Limit: 100, Used: 10, SpentUntil: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	require.EqualValues(t, 50, quota.CallsWithin(spent, 30*time.Minute), "no spare calls while WeCom holds the window spent")
	// The inverse of TimeFor, wherever the windows bind.
	for _, n := range []int64{80_000, 180_000, 2_000_000, 9_000_000} {
		d := quota.TimeFor(pending, n)
		require.GreaterOrEqual(t, quota.CallsWithin(pending, d), n, "%d calls take %s", n, d)
		require.Less(t, quota.CallsWithin(pending, d-time.Minute), n, "%d calls do not fit in %s", n, d-time.Minute)
	}
}

func TestSleep(t *testing.T) {
	t.Parallel()

	t.Run("CanceledContextEndsLongSleep", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.ErrorIs(t, quota.Sleep(ctx, time.Hour), context.Canceled)
	})

	t.Run("ZeroDelayReturnsAtOnce", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, quota.Sleep(context.Background(), 0))
	})
}
