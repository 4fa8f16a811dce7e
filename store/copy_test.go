package store_test

import (
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

// TestCopy: a SQLite database with something in every table is copied into
// a fresh store (SQLite, and PostgreSQL when PENDINGLINK_TEST_POSTGRES is
// set); counts match, what the API reads is the same, new rows get new ids,
// and a second run copies nothing more.
func TestCopy(t *testing.T) {
	t.Parallel()
	for _, to := range storetest.Engines() {
		t.Run("To"+to.Name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			now := func() time.Time { return time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC) }
			src := storetest.MustOpen(t, store.Config{Now: now, Jobs: storetest.Policy{Notify: true}})
			ev := storetest.NewEvent(store.KindAddExternalContact)
			ev.ExternalUserID = "wmtest1"
			_, err := src.SaveEvent(ctx, ev) // an event, its counter, its follow and its job
			require.NoError(t, err)
			dismiss := storetest.NewEvent(store.KindChatDismiss)
			dismiss.ChatID = "wrtestchat1"
			_, err = src.SaveEvent(ctx, dismiss) // a chat's dismissal
			require.NoError(t, err)
			_, err = src.RegisterFans(ctx, []store.FanInput{{UnionID: "test-u1", OpenID: "o-1"}}, store.RegisterOpts{NoJob: true})
			require.NoError(t, err)
			_, err = src.RecordFanPendingID(ctx, "test-u1", "p-1")
			require.NoError(t, err)
			_, err = src.RecordFanPendingID(ctx, "test-u1", "p-1") // a renewal observed
			require.NoError(t, err)
			links, err := src.RecordResolution(ctx, store.Resolution{CorpID: ev.CorpID, ExternalUserID: "wmtest1", UserID: ev.UserID,
				PendingID: "p-1", EventID: ev.ID}) // a resolution, a link, an outbox row and its job
			require.NoError(t, err)
			require.Len(t, links, 1)
			require.NoError(t, src.AddQuota(ctx, "k", 60, 3))
			_, _, err = src.StartSweep(ctx, store.SweepRequested, time.Time{})
			require.NoError(t, err)

			dst := to.Open(t, store.Config{Now: now, Jobs: storetest.Policy{Notify: true}})
			var progressed []string
			rep, err := store.Copy(ctx, src, dst, 1, func(table string, done, total int64) { progressed = append(progressed, table) })
			require.NoError(t, err)
			for _, c := range rep.Tables {
				require.True(t, c.Verified, "%+v", c)
				require.Equal(t, c.Source, c.Dest, c.Table)
				require.Positive(t, c.Source, "the fixture fills %s", c.Table)
			}
			require.Contains(t, progressed, "links")
			require.Equal(t, storetest.MustCounts(t, src).Jobs, int64(rep.Jobs), "every unfinished job")

			obs, err := dst.RenewalObservations(ctx)
			require.NoError(t, err)
			require.Equal(t, store.RenewalObservations{SameID: 1}, obs)
			fan, err := dst.FindFan(ctx, "test-u1")
			require.NoError(t, err)
			require.Len(t, fan.Links, 1)
			require.Equal(t, links[0].ID, fan.Links[0].ID, "ids are kept")
			o, err := dst.NextOutbox(ctx, links[0].ID)
			require.NoError(t, err)
			require.Equal(t, store.OutboxLinkCreated, o.Kind)
			jobs, err := dst.River().JobList(ctx, river.NewJobListParams().States(rivertype.JobStateAvailable).First(100))
			require.NoError(t, err)
			require.Len(t, jobs.Jobs, rep.Jobs)

			// New rows continue after the copied ids.
			ev2 := storetest.NewEvent(store.KindAddExternalContact)
			_, err = dst.SaveEvent(ctx, ev2)
			require.NoError(t, err)
			require.Greater(t, ev2.ID, ev.ID)

			again, err := store.Copy(ctx, src, dst, 100, nil)
			require.NoError(t, err)
			for _, c := range again.Tables {
				require.Zero(t, c.Copied, "resumed copy of %s inserts nothing twice", c.Table)
			}
			require.Zero(t, again.Jobs, "jobs are not copied twice")
		})
	}
}
