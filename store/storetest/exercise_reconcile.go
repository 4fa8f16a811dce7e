package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
)

func unionIDsOf(fans []store.FanInput) []string {
	out := []string{}
	for _, f := range fans {
		out = append(out, f.UnionID)
	}
	return out
}

func (open exerciser) reconcile(t *testing.T) {
	open.test(t, "NewFansHighestPriorityAndNewestFirst", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure registered fans never checked come out interactive first,
		// then newest first, and drop out once checked; unregistered fans
		// wait for their pending_id.
		b.addFan(t, "test-old", "p-old")
		b.clock.Advance(time.Minute)
		b.addFan(t, "test-new", "p-new")
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-vip", OpenID: "o-test-vip"}},
			store.RegisterOpts{Priority: 1, NoJob: true})
		require.NoError(t, err)
		_, err = b.db.RecordFanPendingID(t.Context(), "test-vip", "p-vip")
		require.NoError(t, err)
		b.addFan(t, "test-unregistered", "")

		got, err := b.db.NextFansToCheck(t.Context(), 10, true)
		require.NoError(t, err)
		require.Equal(t, []string{"test-vip", "test-new", "test-old"}, unionIDsOf(got.New))
		require.Nil(t, got.Sweep)

		_, err = b.db.RecordCheck(t.Context(), "test-vip", nil, 0)
		require.NoError(t, err)
		got, err = b.db.NextFansToCheck(t.Context(), 1, true)
		require.NoError(t, err)
		require.Equal(t, []string{"test-new"}, unionIDsOf(got.New))
		got, err = b.db.NextFansToCheck(t.Context(), 10, false)
		require.NoError(t, err)
		require.Empty(t, got.New, "new fans only when asked")
	})

	open.test(t, "ChecksAndSweepsTakeTheMoreRecentlyActiveFirst", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure that among fans of one priority the one active on a later
		// day is checked first, before newer fans active earlier or never,
		// by new checks and by sweeps alike.
		for _, u := range []string{"test-a", "test-b", "test-c"} {
			b.addFan(t, u, "p-"+u)
			b.clock.Advance(time.Minute)
		}
		yesterday := b.clock.Now().Add(-24 * time.Hour)
		require.NoError(t, b.db.UpdateFan(t.Context(), "test-a", store.FanUpdate{LastActive: &yesterday}))
		got, err := b.db.NextFansToCheck(t.Context(), 10, true)
		require.NoError(t, err)
		require.Equal(t, []string{"test-a", "test-c", "test-b"}, unionIDsOf(got.New))

		for _, u := range []string{"test-a", "test-b", "test-c"} {
			_, err := b.db.RecordCheck(t.Context(), u, nil, 0)
			require.NoError(t, err)
		}
		b.clock.Advance(time.Minute)
		_, _, err = b.db.StartSweep(t.Context(), store.SweepRequested, time.Time{})
		require.NoError(t, err)
		got, err = b.db.NextFansToCheck(t.Context(), 10, true)
		require.NoError(t, err)
		require.Equal(t, []string{"test-a", "test-c", "test-b"}, unionIDsOf(got.Swept))
	})

	open.test(t, "ARenewalAfterALapseChecksTheFanAgain", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a fan whose pending_id lapsed before its renewal is checked
		// again: a dealer who added it in the gap got no pending_id for it,
		// and only unionid_to_external_userid can find that customer. A
		// renewal while the id is live changes nothing.
		ctx := t.Context()
		b.addFan(t, "test-u1", "p-1")
		_, err := b.db.RecordCheck(ctx, "test-u1", nil, 0)
		require.NoError(t, err)
		b.clock.Advance(store.PendingIDLifetime - time.Hour)
		_, err = b.db.RecordFanPendingID(ctx, "test-u1", "p-1") // renewed live: the same id
		require.NoError(t, err)
		got, err := b.db.NextFansToCheck(ctx, 10, true)
		require.NoError(t, err)
		require.Empty(t, got.New)

		b.clock.Advance(2 * time.Hour) // p-1 has lapsed
		b.resolve(t, store.Resolution{CorpID: "wwtestcorp", ExternalUserID: "wmtest-gap"})
		b.clock.Advance(time.Hour)
		_, err = b.db.RecordFanPendingID(ctx, "test-u1", "p-2")
		require.NoError(t, err)
		got, err = b.db.NextFansToCheck(ctx, 10, true)
		require.NoError(t, err)
		require.Equal(t, []string{"test-u1"}, unionIDsOf(got.New))
	})

	open.test(t, "SweepGoesOnFromItsLastCheckAndEndsWithEveryFan", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a sweep lists the fans after its last check, not all of
		// them sorted again: a fan that moved ahead of that place is left
		// for the end, and still checked before the sweep ends.
		ctx := t.Context()
		for _, f := range []struct {
			u        string
			priority int
		}{{"test-a", 90}, {"test-b", 50}, {"test-c", 30}, {"test-d", 10}} {
			b.addFan(t, f.u, "p-"+f.u)
			p := f.priority
			require.NoError(t, b.db.UpdateFan(ctx, f.u, store.FanUpdate{Priority: &p}))
			_, err := b.db.RecordCheck(ctx, f.u, nil, 0)
			require.NoError(t, err)
		}
		b.clock.Advance(time.Minute)
		s, _, err := b.db.StartSweep(ctx, store.SweepRequested, time.Time{})
		require.NoError(t, err)
		next := func(limit int) []string {
			t.Helper()
			got, err := b.db.NextFansToCheck(ctx, limit, true)
			require.NoError(t, err)
			return unionIDsOf(got.Swept)
		}
		check := func(u string) {
			t.Helper()
			_, err := b.db.RecordCheck(ctx, u, nil, s.ID)
			require.NoError(t, err)
		}
		require.Equal(t, []string{"test-a"}, next(1))
		check("test-a")
		high := 95
		require.NoError(t, b.db.UpdateFan(ctx, "test-d", store.FanUpdate{Priority: &high})) // now ahead of the last check
		require.Equal(t, []string{"test-b"}, next(1), "on from test-a's place")
		check("test-b")
		require.Equal(t, []string{"test-c"}, next(1))
		check("test-c")
		require.Equal(t, []string{"test-d"}, next(10), "the fan that moved is found before the end")
		check("test-d")
		require.Empty(t, next(10))
	})

	open.test(t, "ASweepCountsTheFansTheNewChecksTakeFromIt", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a fan of the sweep that was never checked, which the new
		// checks take (a sweep leaves those to them), counts as checked by
		// the sweep, so remaining goes down as they are checked.
		b.addFan(t, "test-a", "p-a")
		b.addFan(t, "test-b", "p-b")
		b.clock.Advance(time.Minute)
		s, _, err := b.db.StartSweep(t.Context(), store.SweepRequested, time.Time{})
		require.NoError(t, err)
		require.EqualValues(t, 2, s.Remaining)
		_, err = b.db.RecordCheck(t.Context(), "test-a", nil, 0)
		require.NoError(t, err)
		_, err = b.db.RecordCheck(t.Context(), "test-a", nil, 0) // checked again: not the sweep's any more
		require.NoError(t, err)
		s, err = b.db.LatestSweep(t.Context())
		require.NoError(t, err)
		require.EqualValues(t, 1, s.Checked)
		require.EqualValues(t, 1, s.Remaining)
	})

	open.test(t, "SweepRemainingIsCountedAtItsStart", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure Remaining is the fans to check at the start less those
		// checked, while the sweep itself still finds every fan: one that
		// registers again after the start is swept but not counted.
		b.addFan(t, "test-a", "p-a")
		b.addFan(t, "test-b", "p-b")
		_, err := b.db.SQL().ExecContext(t.Context(), `UPDATE fans SET state = 'failed' WHERE unionid = 'test-b'`)
		require.NoError(t, err)
		b.clock.Advance(time.Minute)
		s, _, err := b.db.StartSweep(t.Context(), store.SweepRequested, time.Time{})
		require.NoError(t, err)
		require.EqualValues(t, 1, s.Remaining)
		_, err = b.db.SQL().ExecContext(t.Context(), `UPDATE fans SET state = 'registered' WHERE unionid = 'test-b'`)
		require.NoError(t, err)
		s, err = b.db.LatestSweep(t.Context())
		require.NoError(t, err)
		require.EqualValues(t, 1, s.Remaining, "not counted again")
		got, err := b.db.NextFansToCheck(t.Context(), 10, false)
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"test-a", "test-b"}, unionIDsOf(got.Swept))
		for _, u := range []string{"test-a", "test-b"} {
			_, err = b.db.RecordCheck(t.Context(), u, nil, s.ID)
			require.NoError(t, err)
		}
		s, err = b.db.LatestSweep(t.Context())
		require.NoError(t, err)
		require.Zero(t, s.Remaining, "never below zero")
	})

	open.test(t, "SweepChecksUnlinkedFansRegisteredBeforeItsTime", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-a", "p-a")
		b.clock.Advance(time.Minute)
		b.addFan(t, "test-b", "p-b")
		b.link(t) // test-u1 is linked: swept last
		for _, u := range []string{"test-a", "test-b", "test-u1"} {
			_, err := b.db.RecordCheck(t.Context(), u, nil, 0)
			require.NoError(t, err)
		}
		cutoff := b.clock.Advance(time.Minute)
		b.clock.Advance(time.Minute)
		b.addFan(t, "test-late", "p-late") // registered after the cutoff

		s, started, err := b.db.StartSweep(t.Context(), store.SweepRequested, cutoff)
		require.NoError(t, err)
		require.True(t, started)
		require.True(t, s.Running())
		require.EqualValues(t, 3, s.Remaining)
		require.True(t, s.RegisteredBefore.Equal(cutoff))

		again, started, err := b.db.StartSweep(t.Context(), store.SweepDowntime, time.Time{})
		require.NoError(t, err)
		require.False(t, started, "sweeps do not stack")
		require.Equal(t, s.ID, again.ID)

		got, err := b.db.NextFansToCheck(t.Context(), 10, false)
		require.NoError(t, err)
		require.Equal(t, s.ID, got.Sweep.ID)
		require.Equal(t, []string{"test-b", "test-a", "test-u1"}, unionIDsOf(got.Swept), "unmatched first, newest first")

		links, err := b.db.RecordCheck(t.Context(), "test-b", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wmtest-b"}}, s.ID)
		require.NoError(t, err)
		require.Len(t, links, 1)
		s, err = b.db.LatestSweep(t.Context())
		require.NoError(t, err)
		require.EqualValues(t, 1, s.Checked)
		require.EqualValues(t, 1, s.Linked)
		require.EqualValues(t, 2, s.Remaining)

		for _, u := range []string{"test-a", "test-u1"} {
			_, err = b.db.RecordCheck(t.Context(), u, nil, s.ID)
			require.NoError(t, err)
		}
		got, err = b.db.NextFansToCheck(t.Context(), 10, false)
		require.NoError(t, err)
		require.Empty(t, got.Swept)
		require.NoError(t, b.db.FinishSweep(t.Context(), s.ID))
		s, err = b.db.LatestSweep(t.Context())
		require.NoError(t, err)
		require.False(t, s.Running())
		require.EqualValues(t, 3, s.Checked)
		require.Zero(t, s.Remaining)
	})

	open.test(t, "NewAndSweptNeverOverlap", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a fan never checked, which a running sweep also covers, is
		// listed once: as new when new fans are asked for, as swept if not.
		b.addFan(t, "test-u1", "p-1")
		b.clock.Advance(time.Minute)
		_, _, err := b.db.StartSweep(t.Context(), store.SweepRequested, time.Time{})
		require.NoError(t, err)
		got, err := b.db.NextFansToCheck(t.Context(), 10, true)
		require.NoError(t, err)
		require.Equal(t, []string{"test-u1"}, unionIDsOf(got.New))
		require.Empty(t, got.Swept)
		got, err = b.db.NextFansToCheck(t.Context(), 10, false)
		require.NoError(t, err)
		require.Empty(t, got.New)
		require.Equal(t, []string{"test-u1"}, unionIDsOf(got.Swept))
	})

	open.test(t, "RecordCheckUnknownFan", Policy{}, func(t *testing.T, b *bundle) {
		_, err := b.db.RecordCheck(t.Context(), "test-nobody", nil, 0)
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	open.test(t, "HeartbeatReturnsWhenAnyInstanceWasLastSeen", Policy{}, func(t *testing.T, b *bundle) {
		last, err := b.db.Heartbeat(t.Context(), "a")
		require.NoError(t, err)
		require.True(t, last.IsZero(), "never seen")
		first := b.clock.Now()
		b.clock.Advance(time.Hour)
		last, err = b.db.Heartbeat(t.Context(), "b")
		require.NoError(t, err)
		require.True(t, last.Equal(first), "instance a was seen an hour ago")
		_, err = b.db.Heartbeat(t.Context(), "")
		require.ErrorIs(t, err, store.ErrInvalid)
	})
}
