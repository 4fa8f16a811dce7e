package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/quota"
)

func (open exerciser) sharedQuota(t *testing.T) {
	open.test(t, "ReserveChecksEveryWindow", nil, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		limits := []quota.Limit{{After: 100, Max: 3}, {After: 0, Max: 4}}
		for i := range 3 {
			ok, err := b.db.ReserveQuota(ctx, "k", 120, limits)
			require.NoError(t, err)
			require.True(t, ok, "call %d", i)
		}
		ok, err := b.db.ReserveQuota(ctx, "k", 120, limits)
		require.NoError(t, err)
		require.False(t, ok, "the short window is full")

		require.NoError(t, b.db.AddQuota(ctx, "k", 60, 0))
		ok, err = b.db.ReserveQuota(ctx, "k", 180, []quota.Limit{{After: 150, Max: 3}, {After: 0, Max: 4}})
		require.NoError(t, err)
		require.True(t, ok, "bucket 120 is out of the short window")
		ok, err = b.db.ReserveQuota(ctx, "k", 180, []quota.Limit{{After: 150, Max: 3}, {After: 0, Max: 4}})
		require.NoError(t, err)
		require.False(t, ok, "the long window is full")

		got, err := b.db.LoadQuota(ctx, "k", 0)
		require.NoError(t, err)
		require.Equal(t, map[int64]int64{60: 0, 120: 3, 180: 1}, got)
		ok, err = b.db.ReserveQuota(ctx, "other", 180, limits)
		require.NoError(t, err)
		require.True(t, ok, "keys count apart")
	})

	open.test(t, "LimitersSharingTheStoreNeverExceedAWindow", nil, func(t *testing.T, b *bundle) {
		// Three processes' limiters on one database, a window of 50: they
		// reserve concurrently until refused; together they take exactly
		// the window, never more.
		const limit = 50
		limiters := make([]*quota.Limiter, 3)
		for i := range limiters {
			l, err := quota.New(t.Context(), quota.Config{Key: "shared", Store: b.db, Now: b.clock.Now,
				Windows: []quota.Window{{Length: time.Hour, Limit: limit}}})
			require.NoError(t, err)
			limiters[i] = l
		}
		var (
			mu    sync.Mutex
			taken = make([]int, len(limiters))
			wg    sync.WaitGroup
		)
		for i, l := range limiters {
			wg.Go(func() {
				for {
					err := l.Reserve(t.Context())
					var qe *quota.Error
					if errors.As(err, &qe) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					taken[i]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		total := 0
		for _, n := range taken {
			total += n
		}
		require.Equal(t, limit, total, "taken by each: %v", taken)
		got, err := b.db.LoadQuota(t.Context(), "shared", 0)
		require.NoError(t, err)
		var counted int64
		for _, n := range got {
			counted += n
		}
		require.EqualValues(t, limit, counted)
		for _, l := range limiters {
			require.Equal(t, int64(limit), l.Usage()[0].Used, "each limiter learns what the others used")
		}
	})
}
