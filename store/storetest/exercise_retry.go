package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
)

func (open exerciser) retry(t *testing.T) {
	// failed stores an add event and fails it with reason.
	failed := func(t *testing.T, b *bundle, reason string) *store.Event {
		ev := b.saveEvent(t, store.KindAddExternalContact)
		require.NoError(t, b.db.UpdateEventState(t.Context(), ev.ID, store.EventFailed, reason))
		return ev
	}

	open.test(t, "EventsGetTheirJobsAgain", Policy{}, func(t *testing.T, b *bundle) {
		old := failed(t, b, "errcode 50002: member outside scope")
		b.clock.Advance(time.Hour)
		recent := failed(t, b, "errcode 50002: member outside scope")
		other := failed(t, b, "gave up after 25 attempts")
		jobsBefore := len(b.jobsWhat(t, JobEvent))

		n, err := b.db.RetryEvents(t.Context(), store.RetryFilter{Reason: "50002", DryRun: true})
		require.NoError(t, err)
		require.EqualValues(t, 2, n)
		require.Len(t, b.jobsWhat(t, JobEvent), jobsBefore, "a dry run changes nothing")

		n, err = b.db.RetryEvents(t.Context(), store.RetryFilter{Reason: "50002", Since: b.clock.Now()})
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		require.Equal(t, store.EventPending, b.event(t, recent.ID).State)
		require.Empty(t, b.event(t, recent.ID).Reason)
		require.Equal(t, store.EventFailed, b.event(t, old.ID).State)
		require.Equal(t, store.EventFailed, b.event(t, other.ID).State)
		jobs := b.jobsWhat(t, JobEvent)
		require.Len(t, jobs, jobsBefore+1)
		require.Equal(t, Job{What: JobEvent, EventID: recent.ID, Subject: recent.ExternalUserID}, jobs[len(jobs)-1])

		n, err = b.db.RetryEvents(t.Context(), store.RetryFilter{Until: b.clock.Now()})
		require.NoError(t, err)
		require.EqualValues(t, 1, n, "the old one; the others are pending or newer")
	})

	open.test(t, "UnmatchedEventsAreLookedUpAgain", Policy{}, func(t *testing.T, b *bundle) {
		ev := b.saveEvent(t, store.KindAddExternalContact)
		require.NoError(t, b.db.UpdateEventState(t.Context(), ev.ID, store.EventUnmatched, ""))
		n, err := b.db.RetryEvents(t.Context(), store.RetryFilter{State: store.EventUnmatched})
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		require.Equal(t, store.EventPending, b.event(t, ev.ID).State)
	})

	open.test(t, "BadFilters", Policy{}, func(t *testing.T, b *bundle) {
		_, err := b.db.RetryEvents(t.Context(), store.RetryFilter{State: store.EventResolved})
		require.ErrorIs(t, err, store.ErrInvalid)
		_, err = b.db.RetryFans(t.Context(), store.RetryFilter{Since: b.clock.Now(), Until: b.clock.Now().Add(-time.Hour)})
		require.ErrorIs(t, err, store.ErrInvalid)
	})

	open.test(t, "FailedFansAreQueuedAgain", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-bad", "")
		require.NoError(t, b.db.FailFan(t.Context(), "test-bad", "errcode 610016: corp not certified"))
		b.addFan(t, "test-other", "")
		require.NoError(t, b.db.FailFan(t.Context(), "test-other", "errcode 610014: invalid unionid"))
		b.addFan(t, "test-fine", "p-fine")

		n, err := b.db.RetryFans(t.Context(), store.RetryFilter{Reason: "610016", DryRun: true})
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		n, err = b.db.RetryFans(t.Context(), store.RetryFilter{Reason: "610016"})
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		require.Equal(t, store.FanNew, b.fan(t, "test-bad").State)
		require.Equal(t, store.FanFailed, b.fan(t, "test-other").State)
		require.Equal(t, []string{"test-bad"}, b.nextFans(t, 10), "queued again")
	})
}
