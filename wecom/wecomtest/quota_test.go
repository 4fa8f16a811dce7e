package wecomtest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

func TestQuota(t *testing.T) {
	t.Parallel()

	// registerCodes registers p n times and returns the errcodes.
	registerCodes := func(t *testing.T, b testBundle, p wecomtest.Person, n int) []int {
		t.Helper()
		tok := mustToken(t, b.srv)
		var codes []int
		for range n {
			codes = append(codes, register(t, b.srv, tok, p).Errcode)
		}
		return codes
	}
	lookupCodes := func(t *testing.T, b testBundle, p wecomtest.Person, n int) []int {
		t.Helper()
		tok := mustToken(t, b.srv)
		var codes []int
		for range n {
			codes = append(codes, post[common](t, b.srv, wecomtest.APIUnionIDToExternalUserID, tok,
				map[string]string{"unionid": p.UnionID, "openid": p.OpenID}).Errcode)
		}
		return codes
	}

	t.Run("PendingHourlyLimitBlocksUntilTheNextClockHour", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithQuotas(wecomtest.Quota{Hour: 3}, wecomtest.Quota{}))
		p := b.srv.AddPerson()
		b.clock.Advance(30 * time.Minute) // mid-hour: the window is the clock hour, not a rolling hour
		require.Equal(t, []int{0, 0, 0, 45009, 45009}, registerCodes(t, b, p, 5))
		b.clock.Advance(29*time.Minute + 59*time.Second)
		require.Equal(t, []int{45009}, registerCodes(t, b, p, 1))
		b.clock.Advance(time.Second)
		require.Equal(t, []int{0, 0, 0, 45009}, registerCodes(t, b, p, 4), "refused calls did not count")
		require.Equal(t, map[int]int{0: 6, 45009: 4}, b.srv.Errcodes(wecomtest.APIUnionIDToPendingID))
	})

	t.Run("PendingDailyLimitUsesChinaCalendarDay", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithQuotas(wecomtest.Quota{Hour: -1, Day: 2}, wecomtest.Quota{}))
		p := b.srv.AddPerson()
		b.clock.Set(time.Date(2025, 1, 1, 15, 30, 0, 0, time.UTC)) // 23:30 in China
		require.Equal(t, []int{0, 0, 45009}, registerCodes(t, b, p, 3))
		b.clock.Advance(30 * time.Minute) // 00:00 in China, still 1 January in UTC
		require.Equal(t, []int{0, 0, 45009}, registerCodes(t, b, p, 3))
	})

	t.Run("PendingMonthlyLimitUsesChinaCalendarMonth", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithQuotas(wecomtest.Quota{Hour: -1, Day: -1, Month: 2}, wecomtest.Quota{}))
		p := b.srv.AddPerson()
		b.clock.Set(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) // 1 January 08:00 in China
		require.Equal(t, []int{0, 0, 45009}, registerCodes(t, b, p, 3))
		b.clock.Set(time.Date(2025, 1, 31, 15, 59, 59, 0, time.UTC)) // 31 January 23:59:59 in China
		require.Equal(t, []int{45009}, registerCodes(t, b, p, 1))
		b.clock.Advance(time.Second)
		require.Equal(t, []int{0, 0, 45009}, registerCodes(t, b, p, 3))
	})

	t.Run("NegativeMeansUnlimited", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithQuotas(wecomtest.Quota{Hour: -1, Day: -1, Month: -1}, wecomtest.Quota{}))
		p := b.srv.AddPerson()
		for _, c := range registerCodes(t, b, p, 50) {
			require.Equal(t, 0, c)
		}
	})

	t.Run("ExternalQuotaIsSeparate", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithQuotas(wecomtest.Quota{Hour: 2}, wecomtest.Quota{Hour: 1}))
		p := b.srv.AddPerson()
		require.Equal(t, []int{0, 45009}, lookupCodes(t, b, p, 2))
		require.Equal(t, []int{0, 0, 45009}, registerCodes(t, b, p, 3))
		b.clock.Advance(time.Hour)
		require.Equal(t, []int{0, 45009}, lookupCodes(t, b, p, 2))
	})

	t.Run("ExternalDailyLimit", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithQuotas(wecomtest.Quota{}, wecomtest.Quota{Hour: -1, Day: 2}))
		p := b.srv.AddPerson()
		require.Equal(t, []int{0, 0, 45009}, lookupCodes(t, b, p, 3))
		b.clock.Advance(23 * time.Hour)
		require.Equal(t, []int{45009}, lookupCodes(t, b, p, 1))
		b.clock.Advance(time.Hour)
		require.Equal(t, []int{0}, lookupCodes(t, b, p, 1))
	})

	// Ensure calls that never reach the API (bad token, injected faults) and
	// the batch API do not consume the registration quota.
	t.Run("OnlyAuthenticatedCallsCount", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithQuotas(wecomtest.Quota{Hour: 1}, wecomtest.Quota{}))
		p := b.srv.AddPerson()
		require.Equal(t, 40014, register(t, b.srv, "testtoken-garbage", p).Errcode)
		b.srv.FailNext(wecomtest.APIUnionIDToPendingID, wecomtest.Fault{Errcode: -1})
		require.Equal(t, []int{-1, 0, 45009}, registerCodes(t, b, p, 3))
	})

	t.Run("FailedLookupsCount", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithQuotas(wecomtest.Quota{Hour: 1}, wecomtest.Quota{}))
		p := b.srv.AddPerson()
		require.Equal(t, 610014, register(t, b.srv, mustToken(t, b.srv), wecomtest.Person{UnionID: "test-unobody", OpenID: "x"}).Errcode)
		require.Equal(t, []int{45009}, registerCodes(t, b, p, 1))
	})
}

func TestServer_SpendPendingQuota(t *testing.T) {
	t.Parallel()
	s := wecomtest.NewServer(wecomtest.WithQuotas(wecomtest.Quota{Hour: 5}, wecomtest.Quota{}))
	t.Cleanup(s.Close)
	require.Equal(t, 3, s.SpendPendingQuota(3), "another app's calls count")
	require.Equal(t, 2, s.SpendPendingQuota(10), "up to the hour's limit")
	s.Clock.Advance(time.Hour)
	require.Equal(t, 1, s.SpendPendingQuota(1), "a new hour")
}
