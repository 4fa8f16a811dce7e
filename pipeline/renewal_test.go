package pipeline_test

import (
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/internal/fakeclock"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/pipeline/pipelinetest"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

// renewalBundle is a worker bundle on a fake clock with a quota of 900
// calls per 90 days, so the forecast's sustainable figure shows the renewal
// cycle: 830 fans renewed 7 days early, 900 renewed at expiry.
func setupRenewal(t *testing.T, mutate func(*pipeline.Config)) (*workerBundle, *fakeclock.Clock) {
	t.Helper()
	clock := fakeclock.New(testNow)
	b := setupWorkersAt(t, clock.Now, func(c *pipeline.Config) {
		c.Quota = &pipelinetest.FakeQuota{Windows: []quota.Usage{{Length: store.PendingIDLifetime, Limit: 900}}}
		if mutate != nil {
			mutate(c)
		}
	})
	return b, clock
}

// renewal runs the renew job and returns the unionids queued, the policy
// and the forecast's sustainable figure.
func (b *workerBundle) renewal(t *testing.T) ([]string, pipeline.RenewalPolicy, int64) {
	t.Helper()
	require.Equal(t, river.EventKindJobCompleted, mustWork(t, b, pipeline.RenewArgs{}).EventKind)
	queued := storetest.QueuedUnionIDs(t, b.db, 10)
	f, err := b.pl.Forecast(t.Context())
	require.NoError(t, err)
	pol, err := b.pl.RenewalPolicy(t.Context())
	require.NoError(t, err)
	require.Equal(t, pol, f.Renewal, "the forecast shows the policy")
	return queued, pol, f.Sustainable
}

// answer records pendingID as WeCom's answer to a renewal of unionID, as
// the registrar does.
func (b *workerBundle) answer(t *testing.T, unionID, pendingID string) {
	t.Helper()
	_, err := b.db.RecordFanPendingID(t.Context(), unionID, pendingID)
	require.NoError(t, err)
}

func TestRenewalPolicy_AutoLearnsSameIDAndUnlearnsOnNewID(t *testing.T) {
	t.Parallel()
	// Ensure auto renews early until LearnAfter renewals got the id back
	// and none a new one, then at expiry (the renew job's horizon and the
	// forecast alike), and early again after one new id.
	b, clock := setupRenewal(t, func(c *pipeline.Config) {
		c.RenewLearnAfter, c.RenewBatch = 3, 3
		// Room for 3 calls before the next run: a run queues 3 fans.
		c.Quota = &pipelinetest.FakeQuota{Windows: []quota.Usage{{Length: store.PendingIDLifetime, Limit: 900, Used: 897}}}
	})
	for _, u := range []string{"test-a1", "test-a2", "test-a3", "test-b"} {
		b.registerFan(t, u, "p-"+u)
	}
	require.NoError(t, b.db.SetFanPriority(t.Context(), "test-b", 10)) // left by the first run
	clock.Set(testNow.Add(store.PendingIDLifetime - 5*24*time.Hour))

	queued, pol, sustainable := b.renewal(t)
	require.Equal(t, []string{"test-a1", "test-a2", "test-a3"}, queued, "early: 5 days before expiry")
	require.Equal(t, pipeline.RenewalPolicy{Mode: pipeline.RenewEarlyAuto, Early: true, RenewBefore: 7 * 24 * time.Hour, LearnAfter: 3}, pol)
	require.EqualValues(t, 830, sustainable, "renewed every 83 days")

	b.answer(t, "test-a1", "p-test-a1")
	b.answer(t, "test-a2", "p-test-a2")
	pol, err := b.pl.RenewalPolicy(t.Context())
	require.NoError(t, err)
	require.True(t, pol.Early, "two same answers are not enough")
	require.Equal(t, store.RenewalObservations{SameID: 2}, pol.Observed)

	b.answer(t, "test-a3", "p-test-a3")
	queued, pol, sustainable = b.renewal(t)
	require.Empty(t, queued, "at expiry: test-b's id lives 5 more days")
	require.Equal(t, pipeline.RenewalPolicy{Mode: pipeline.RenewEarlyAuto, LearnAfter: 3,
		Observed: store.RenewalObservations{SameID: 3}}, pol)
	require.EqualValues(t, 900, sustainable, "renewed every 90 days")

	b.answer(t, "test-a1", "p-test-a1-2") // a new id while p-test-a1 lives
	queued, pol, sustainable = b.renewal(t)
	require.Equal(t, []string{"test-b"}, queued, "early again")
	require.True(t, pol.Early)
	require.Equal(t, store.RenewalObservations{SameID: 3, NewID: 1}, pol.Observed)
	require.EqualValues(t, 830, sustainable)
}

func TestRenewalPolicy_ModesIgnoreObservations(t *testing.T) {
	t.Parallel()
	// Ensure always and never hold whatever WeCom answered; the answers
	// are still counted.
	for _, tc := range []struct {
		mode  pipeline.RenewEarly
		early bool
		want  []string
	}{
		{pipeline.RenewEarlyAlways, true, []string{"test-b"}},
		{pipeline.RenewEarlyNever, false, nil},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			t.Parallel()
			b, clock := setupRenewal(t, func(c *pipeline.Config) { c.RenewEarly = tc.mode; c.RenewLearnAfter = 1 })
			b.registerFan(t, "test-a", "p-a")
			b.registerFan(t, "test-b", "p-b")
			clock.Set(testNow.Add(store.PendingIDLifetime - 5*24*time.Hour))
			b.answer(t, "test-a", "p-a")
			queued, pol, _ := b.renewal(t)
			require.Equal(t, tc.want, queued)
			require.Equal(t, tc.early, pol.Early)
			require.Equal(t, store.RenewalObservations{SameID: 1}, pol.Observed)
		})
	}
}

func TestConfig_RenewEarly(t *testing.T) {
	t.Parallel()
	b := setupWorkers(t, nil)
	pol, err := b.pl.RenewalPolicy(t.Context())
	require.NoError(t, err)
	require.Equal(t, pipeline.RenewEarlyAuto, pol.Mode, "the default")
	require.Equal(t, pipeline.DefaultRenewLearnAfter, pol.LearnAfter)

	_, err = pipeline.New(pipeline.Config{Store: b.db, WeCom: b.wecom, Coalescer: &pipeline.Coalescer{}, RenewEarly: "sometimes"})
	require.ErrorContains(t, err, "RenewEarly")
	for _, s := range []string{"auto", "always", "never"} {
		m, err := pipeline.ParseRenewEarly(s)
		require.NoError(t, err)
		require.Equal(t, pipeline.RenewEarly(s), m)
	}
	_, err = pipeline.ParseRenewEarly("Auto")
	require.Error(t, err)
}
