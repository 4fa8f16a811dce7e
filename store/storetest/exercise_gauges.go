package storetest

import (
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
)

// gauges exercises the reads behind the gauges of /metrics.
func (open exerciser) gauges(t *testing.T) {
	open.test(t, "JobCountsByQueueAndStateSkipFinished", Policy{}, func(t *testing.T, b *bundle) {
		counts, err := b.db.JobCounts(t.Context())
		require.NoError(t, err)
		require.Empty(t, counts)

		// Three jobs (default queue, available), one of them cancelled;
		// one job scheduled later on another queue.
		for _, u := range []string{"test-u1", "test-u2", "test-u3"} {
			_, err = b.db.River().Insert(t.Context(), Job{What: "test", Subject: u}, nil)
			require.NoError(t, err)
		}
		_, err = b.db.River().JobCancel(t.Context(), jobRows(t, b.db)[0].ID)
		require.NoError(t, err)
		_, err = b.db.River().Insert(t.Context(), Job{What: "test", Subject: "later"},
			&river.InsertOpts{Queue: "other", ScheduledAt: time.Now().Add(time.Hour)})
		require.NoError(t, err)

		counts, err = b.db.JobCounts(t.Context())
		require.NoError(t, err)
		require.Equal(t, []store.JobCount{
			{Queue: river.QueueDefault, State: "available", Count: 2},
			{Queue: "other", State: "scheduled", Count: 1},
		}, counts)
	})

	open.test(t, "OutboxStatusCountsUndeliveredAndFailing", Policy{}, func(t *testing.T, b *bundle) {
		st, err := b.db.OutboxStatus(t.Context())
		require.NoError(t, err)
		require.Equal(t, store.OutboxStatus{}, st)

		l := b.link(t) // link_created at start
		b.clock.Advance(time.Hour)
		b.end(t) // link_ended an hour later
		first := b.nextOutbox(t, l.ID)
		require.NoError(t, b.db.MarkOutbox(t.Context(), first, "webhook: status 500"))
		st, err = b.db.OutboxStatus(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(2), st.Undelivered)
		require.Equal(t, int64(1), st.Failing)
		require.True(t, st.Oldest.Equal(b.start), "oldest %v, want %v", st.Oldest, b.start)

		// Delivered rows leave the status, failed attempt or not.
		require.NoError(t, b.db.MarkOutbox(t.Context(), first, ""))
		st, err = b.db.OutboxStatus(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(1), st.Undelivered)
		require.Zero(t, st.Failing)
		require.True(t, st.Oldest.Equal(b.start.Add(time.Hour)), "oldest %v", st.Oldest)
	})

	open.test(t, "CountFansExpiringCountsTheNewestLivePendingID", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-old", "p-old") // expires at start + 90 days
		b.clock.Advance(10 * 24 * time.Hour)
		b.addFan(t, "test-renewed", "p-renewed-1")
		b.addFan(t, "test-young", "p-young")
		b.clock.Advance(store.PendingIDLifetime - 10*24*time.Hour - 12*time.Hour) // test-old expires in 12 h
		// test-renewed got a second pending_id: its newest one counts.
		_, err := b.db.RecordFanPendingID(t.Context(), "test-renewed", "p-renewed-2")
		require.NoError(t, err)

		count := func(within time.Duration) int64 {
			n, err := b.db.CountFansExpiring(t.Context(), within)
			require.NoError(t, err)
			return n
		}
		require.Equal(t, int64(1), count(24*time.Hour))
		require.Zero(t, count(11*time.Hour))
		require.Equal(t, int64(2), count(11*24*time.Hour), "test-old and test-young")

		b.clock.Advance(13 * time.Hour)
		require.Zero(t, count(24*time.Hour), "an expired pending_id no longer counts")
	})
}
