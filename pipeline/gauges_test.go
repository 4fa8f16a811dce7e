package pipeline_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/internal/fakeclock"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/pipeline/pipelinetest"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

func TestPipeline_Gauges(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		db    *store.DB
		clock *fakeclock.Clock
		pl    *pipeline.Pipeline
	}
	setup := func(t *testing.T, webhook *pipeline.Webhook) *testBundle {
		t.Helper()
		clock := fakeclock.New(testNow)
		db := storetest.MustOpen(t, store.Config{Now: clock.Now, Jobs: pipeline.Policy{}})
		co, err := pipeline.NewCoalescer(&pipelinetest.FakeWeCom{}, pipeline.CoalescerConfig{Window: time.Millisecond})
		require.NoError(t, err)
		t.Cleanup(co.Close)
		pl, err := pipeline.New(pipeline.Config{Store: db, WeCom: &pipelinetest.FakeWeCom{}, Coalescer: co, Now: clock.Now, Webhook: webhook})
		require.NoError(t, err)
		return &testBundle{db: db, clock: clock, pl: pl}
	}
	jobCount := func(t *testing.T, g pipeline.Gauges, queue, state string) int64 {
		t.Helper()
		for _, j := range g.Jobs {
			if j.Queue == queue && j.State == state {
				return j.Count
			}
		}
		t.Fatalf("no job count for queue %q state %q", queue, state)
		return 0
	}

	t.Run("CountsFansJobsAndNoWebhook", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		ctx := t.Context()
		// test-old gets its pending_id first and expires 12 hours after
		// test-new got its one; test-queued waits in the registration queue.
		_, err := b.db.RegisterFans(ctx, []store.FanInput{{UnionID: "test-old", OpenID: "o"}, {UnionID: "test-new", OpenID: "o"}}, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)
		_, err = b.db.RecordFanPendingID(ctx, "test-old", "p-old")
		require.NoError(t, err)
		b.clock.Advance(store.PendingIDLifetime - 12*time.Hour)
		_, err = b.db.RecordFanPendingID(ctx, "test-new", "p-new")
		require.NoError(t, err)
		_, err = b.db.RegisterFans(ctx, []store.FanInput{{UnionID: "test-queued", OpenID: "o"}}, store.RegisterOpts{})
		require.NoError(t, err)

		g, err := b.pl.Gauges(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 1, g.ExpiringWithinDay)
		require.EqualValues(t, 1, g.Status.FansExpiring)
		require.EqualValues(t, 2, g.Status.FansValid)
		require.EqualValues(t, 2, g.Forecast.LivePendingIDs)
		require.EqualValues(t, 1, g.Forecast.ExpiringWithin7Days)
		require.EqualValues(t, 1, g.Status.FansQueued)
		require.Zero(t, jobCount(t, g, pipeline.QueueRegister, "available"), "the queue is the fans table, not jobs")
		require.Zero(t, jobCount(t, g, pipeline.QueueResolve, "available"), "every queue and state is listed, zero or not")
		require.Zero(t, jobCount(t, g, pipeline.QueueDefault, "discarded"))
		require.Len(t, g.Jobs, 3*len(store.JobStates))
		require.Nil(t, g.Webhook, "without a webhook the outbox keeps notifications on purpose")
	})

	t.Run("WebhookOutbox", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &pipeline.Webhook{URL: "http://127.0.0.1:1/unused", Secret: "test"})
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-u1", OpenID: "o"}}, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)
		_, err = b.db.LinkExisting(t.Context(), "test-u1", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wm1"}})
		require.NoError(t, err)
		b.clock.Advance(time.Minute)

		g, err := b.pl.Gauges(t.Context())
		require.NoError(t, err)
		require.NotNil(t, g.Webhook)
		require.EqualValues(t, 1, g.Webhook.Undelivered)
		require.Zero(t, g.Webhook.Failing)
		require.True(t, g.Webhook.Oldest.Equal(testNow), "oldest %v", g.Webhook.Oldest)
	})
}
