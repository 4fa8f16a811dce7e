package storetest

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
)

func (open exerciser) registerFans(t *testing.T) {
	open.test(t, "PriorityGivenKeptOrDefault", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a fan's priority is stored when given, kept when not, and
		// 50 for a new fan given none; SetFanPriority changes it.
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{
			{UnionID: "test-vip", OpenID: "o-1", Priority: 95}, {UnionID: "test-plain", OpenID: "o-2"},
		}, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)
		require.Equal(t, 95, b.fan(t, "test-vip").Priority)
		require.Equal(t, store.DefaultFanPriority, b.fan(t, "test-plain").Priority)

		_, err = b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-vip", OpenID: "o-1"}}, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)
		require.Equal(t, 95, b.fan(t, "test-vip").Priority, "re-sent without a priority: kept")

		require.NoError(t, b.db.SetFanPriority(t.Context(), "test-plain", 1))
		require.Equal(t, 1, b.fan(t, "test-plain").Priority)
		require.ErrorIs(t, b.db.SetFanPriority(t.Context(), "test-nobody", 10), store.ErrNotFound)
		require.ErrorIs(t, b.db.SetFanPriority(t.Context(), "test-plain", 101), store.ErrInvalid)
		_, err = b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-x", OpenID: "o-3", Priority: -1}}, store.RegisterOpts{})
		require.ErrorIs(t, err, store.ErrInvalid)
	})

	open.test(t, "StrandedFansAreStoredNeitherRegisteredNorQueued", Policy{}, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		_, err := b.db.RegisterFans(ctx, []store.FanInput{{UnionID: "test-cut", OpenID: "o-cut"}, {UnionID: "test-done", OpenID: "o-done"}},
			store.RegisterOpts{Priority: store.QueueInteractive, NoJob: true})
		require.NoError(t, err)
		_, err = b.db.RecordFanPendingID(ctx, "test-done", "p-done")
		require.NoError(t, err)
		_, err = b.db.RegisterFans(ctx, []store.FanInput{{UnionID: "test-queued", OpenID: "o-queued"}}, store.RegisterOpts{})
		require.NoError(t, err)
		cutoff := b.clock.Advance(time.Minute)
		fans, err := b.db.StrandedFans(ctx, cutoff, 10)
		require.NoError(t, err)
		require.Equal(t, []string{"test-cut"}, unionIDsOf(fans))
		fans, err = b.db.StrandedFans(ctx, cutoff.Add(-2*time.Minute), 10)
		require.NoError(t, err)
		require.Empty(t, fans, "changed since")
	})

	open.test(t, "LastActiveKeptOrNewer", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a fan's last-active time is stored when given, kept when a
		// re-register gives none or an older one (a stale import does not
		// age a fan), replaced by a newer one; UpdateFan sets it exactly.
		active := b.start.Add(-48 * time.Hour)
		register := func(f store.FanInput) {
			t.Helper()
			_, err := b.db.RegisterFans(t.Context(), []store.FanInput{f}, store.RegisterOpts{NoJob: true})
			require.NoError(t, err)
		}
		lastActive := func() *time.Time { t.Helper(); return b.fan(t, "test-u1").LastActiveAt }
		register(store.FanInput{UnionID: "test-u2", OpenID: "o-2"})
		require.Nil(t, b.fan(t, "test-u2").LastActiveAt, "none given: unknown")
		register(store.FanInput{UnionID: "test-u1", OpenID: "o-1", LastActive: active})
		require.True(t, active.Equal(*lastActive()))
		register(store.FanInput{UnionID: "test-u1", OpenID: "o-1"})
		require.True(t, active.Equal(*lastActive()), "none given: kept")
		register(store.FanInput{UnionID: "test-u1", OpenID: "o-1", LastActive: active.Add(-time.Hour)})
		require.True(t, active.Equal(*lastActive()), "older: kept")
		register(store.FanInput{UnionID: "test-u1", OpenID: "o-1", LastActive: active.Add(time.Hour)})
		require.True(t, active.Add(time.Hour).Equal(*lastActive()), "newer: replaces")

		older := active.Add(-24 * time.Hour)
		require.NoError(t, b.db.UpdateFan(t.Context(), "test-u1", store.FanUpdate{LastActive: &older}))
		require.True(t, older.Equal(*lastActive()), "UpdateFan sets it as given")
		require.Equal(t, store.DefaultFanPriority, b.fan(t, "test-u1").Priority, "and keeps the priority")
		require.ErrorIs(t, b.db.UpdateFan(t.Context(), "test-nobody", store.FanUpdate{LastActive: &older}), store.ErrNotFound)
		require.ErrorIs(t, b.db.UpdateFan(t.Context(), "test-u1", store.FanUpdate{}), store.ErrInvalid, "nothing to change")

		// A clock a little ahead is tolerated; further is a caller's bug.
		register(store.FanInput{UnionID: "test-u3", OpenID: "o-3", LastActive: b.start.Add(store.MaxClockSkew)})
		future := b.start.Add(store.MaxClockSkew + time.Second)
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-u4", OpenID: "o-4", LastActive: future}}, store.RegisterOpts{})
		require.ErrorIs(t, err, store.ErrInvalid)
		require.ErrorIs(t, b.db.UpdateFan(t.Context(), "test-u1", store.FanUpdate{LastActive: &future}), store.ErrInvalid)
		_, err = b.db.FindFan(t.Context(), "test-u4")
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	fans := []store.FanInput{{UnionID: "test-u1", OpenID: "o-1"}, {UnionID: "test-u2", OpenID: "o-2"}}

	// registerJob is one queued fan and its queue class.
	type registerJob struct {
		UnionID  string
		Priority int
	}
	registerJobs := func(t *testing.T, b *bundle) []registerJob {
		t.Helper()
		var out []registerJob
		for _, f := range MustQueue(t, b.db, 100) {
			out = append(out, registerJob{UnionID: f.UnionID, Priority: f.Class})
		}
		require.Empty(t, jobRows(t, b.db), "the queue is the fans table: no job per fan")
		return out
	}

	open.test(t, "QueuesEveryFan", Policy{}, func(t *testing.T, b *bundle) {
		res, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{Priority: store.QueueBulk})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 2}, res)
		require.Equal(t, []registerJob{{"test-u1", 3}, {"test-u2", 3}}, registerJobs(t, b))
		fan := b.fan(t, "test-u1")
		require.Equal(t, store.FanNew, fan.State)
		require.Equal(t, "o-1", fan.OpenID)
		require.True(t, fan.CreatedAt.Equal(b.start))
	})

	open.test(t, "SecondCallSkipsQueuedFans", Policy{}, func(t *testing.T, b *bundle) {
		_, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{Priority: 3})
		require.NoError(t, err)
		res, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{Priority: 3})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Skipped: 2}, res)
		require.Len(t, registerJobs(t, b), 2)

		// Asked for interactively, a fan queued in bulk moves up, but is
		// still queued once.
		res, err = b.db.RegisterFans(t.Context(), fans[1:], store.RegisterOpts{Priority: store.QueueInteractive})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Skipped: 1}, res)
		require.Equal(t, []registerJob{{"test-u2", 1}, {"test-u1", 3}}, registerJobs(t, b))
	})

	open.test(t, "DuplicateInOneCallQueuedOnce", Policy{}, func(t *testing.T, b *bundle) {
		res, err := b.db.RegisterFans(t.Context(), []store.FanInput{fans[0], fans[0]}, store.RegisterOpts{})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 1, Skipped: 1}, res)
		require.Len(t, registerJobs(t, b), 1)
	})

	open.test(t, "SkipsFanWithLivePendingID", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "p-1")
		res, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 1, Skipped: 1}, res)
		require.Equal(t, []registerJob{{"test-u2", 3}}, registerJobs(t, b), "default priority 3")
	})

	open.test(t, "QueuesFanWhosePendingIDExpired", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "p-1")
		b.clock.Advance(store.PendingIDLifetime)
		res, err := b.db.RegisterFans(t.Context(), fans[:1], store.RegisterOpts{})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 1}, res)
		require.Len(t, registerJobs(t, b), 1)
	})

	open.test(t, "NoJobInsertsNoJob", Policy{}, func(t *testing.T, b *bundle) {
		res, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 2}, res)
		require.Equal(t, store.Counts{Fans: 2}, b.counts(t))
	})

	open.test(t, "NoPolicyQueuesWithoutJob", nil, func(t *testing.T, b *bundle) {
		// Ensure that without a policy a fan counts as queued (the caller
		// registers it) and no job is inserted.
		res, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 2}, res)
		require.Equal(t, store.Counts{Fans: 2}, b.counts(t))
	})

	open.test(t, "RenewRequeuesRegisteredFan", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "p-1")
		res, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-u1", OpenID: "o-test-u1"}}, store.RegisterOpts{Priority: 4, Renew: true})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 1}, res)
		require.Equal(t, []registerJob{{"test-u1", 4}}, registerJobs(t, b))
	})

	open.test(t, "UpdatesChangedOpenID", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "")
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-u1", OpenID: "o-new"}}, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)
		require.Equal(t, "o-new", b.fan(t, "test-u1").OpenID)
		require.Equal(t, int64(1), b.counts(t).Fans)
	})

	open.test(t, "ErrInvalidWritesNothing", Policy{}, func(t *testing.T, b *bundle) {
		for name, bad := range map[string]store.FanInput{
			"NoUnionID": {OpenID: "o-3"},
			"NoOpenID":  {UnionID: "test-u3"},
			"TooLong":   {UnionID: strings.Repeat("u", 129), OpenID: "o-3"},
		} {
			_, err := b.db.RegisterFans(t.Context(), append(fans[:2:2], bad), store.RegisterOpts{})
			require.ErrorIs(t, err, store.ErrInvalid, name)
		}
		require.Equal(t, store.Counts{}, b.counts(t))
	})
}

func (open exerciser) failFan(t *testing.T) {
	open.test(t, "RecordsReason", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "")
		require.NoError(t, b.db.FailFan(t.Context(), "test-u1", "wecom: errcode 610014: invalid unionid"))
		fan := b.fan(t, "test-u1")
		require.Equal(t, store.FanFailed, fan.State)
		require.Equal(t, "wecom: errcode 610014: invalid unionid", fan.LastError)
	})

	open.test(t, "TruncatesLongReason", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "")
		require.NoError(t, b.db.FailFan(t.Context(), "test-u1", strings.Repeat("x", store.MaxFieldLen+10)))
		require.Len(t, b.fan(t, "test-u1").LastError, store.MaxFieldLen)
	})

	open.test(t, "RegistrationClearsFailure", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "")
		require.NoError(t, b.db.FailFan(t.Context(), "test-u1", "boom"))
		_, err := b.db.RecordFanPendingID(t.Context(), "test-u1", "p-1")
		require.NoError(t, err)
		fan := b.fan(t, "test-u1")
		require.Equal(t, store.FanRegistered, fan.State)
		require.Empty(t, fan.LastError)
	})
}

func (open exerciser) findFan(t *testing.T) {
	open.test(t, "PendingIDsNewestFirst", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "p-1")
		issued := b.clock.Advance(24 * time.Hour)
		_, err := b.db.RecordFanPendingID(t.Context(), "test-u1", "p-2")
		require.NoError(t, err)
		b.resolve(t, resolution("wwtestcorp", "wmtest1", "p-2"))

		fan := b.fan(t, "test-u1")
		require.Equal(t, "test-u1", fan.UnionID)
		require.Equal(t, store.FanRegistered, fan.State)
		require.Len(t, fan.PendingIDs, 2)
		require.Equal(t, "p-2", fan.PendingIDs[0].PendingID)
		require.Equal(t, "p-1", fan.PendingIDs[1].PendingID)
		require.True(t, fan.PendingIDs[0].IssuedAt.Equal(issued))
		require.True(t, fan.PendingIDs[0].ExpiresAt.Equal(issued.Add(store.PendingIDLifetime)))
		require.Equal(t, "p-2", fan.PendingID)
		require.NotNil(t, fan.ExpiresAt)
		require.True(t, fan.ExpiresAt.Equal(issued.Add(store.PendingIDLifetime)))
		require.Len(t, fan.Links, 1)
		require.Equal(t, "wmtest1", fan.Links[0].ExternalUserID)
	})

	open.test(t, "NoLivePendingIDShown", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "p-1")
		b.clock.Advance(store.PendingIDLifetime)
		fan := b.fan(t, "test-u1")
		require.Empty(t, fan.PendingID)
		require.Nil(t, fan.ExpiresAt)
		require.Len(t, fan.PendingIDs, 1)
	})

	open.test(t, "NewFanHasEmptyLists", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "")
		fan := b.fan(t, "test-u1")
		require.NotNil(t, fan.PendingIDs)
		require.Empty(t, fan.PendingIDs)
		require.NotNil(t, fan.Links)
		require.Empty(t, fan.Links)
	})

	open.test(t, "ErrNotFound", Policy{}, func(t *testing.T, b *bundle) {
		_, err := b.db.FindFan(t.Context(), "test-nobody")
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}

func (open exerciser) findLinks(t *testing.T) {
	// Five links, one hour apart, newest last:
	// 1 u1/c1/e1, 2 u1/c2/e2, 3 u2/c1/e3, 4 u2/c2/e4, 5 u3/c1/e5.
	b := open.setup(t, Policy{})
	type spec struct{ union, corp, ext string }
	specs := []spec{
		{"test-u1", "wwtestc1", "wm1"}, {"test-u1", "wwtestc2", "wm2"},
		{"test-u2", "wwtestc1", "wm3"}, {"test-u2", "wwtestc2", "wm4"}, {"test-u3", "wwtestc1", "wm5"},
	}
	for _, u := range []string{"test-u1", "test-u2", "test-u3"} {
		b.addFan(t, u, "p-"+u)
	}
	ids := make([]int64, len(specs))
	for i, s := range specs {
		b.clock.Advance(time.Hour)
		links := b.resolve(t, resolution(s.corp, s.ext, "p-"+s.union))
		require.Len(t, links, 1)
		ids[i] = links[0].ID
	}
	externals := func(links []store.Link) []string {
		var out []string
		for _, l := range links {
			out = append(out, l.ExternalUserID)
		}
		return out
	}

	for name, tc := range map[string]struct {
		filter store.LinkFilter
		want   []string
	}{
		"AllNewestFirst":   {store.LinkFilter{}, []string{"wm5", "wm4", "wm3", "wm2", "wm1"}},
		"ByUnionID":        {store.LinkFilter{UnionID: "test-u2"}, []string{"wm4", "wm3"}},
		"ByCorp":           {store.LinkFilter{CorpID: "wwtestc1"}, []string{"wm5", "wm3", "wm1"}},
		"ByExternal":       {store.LinkFilter{ExternalUserID: "wm2"}, []string{"wm2"}},
		"ByCorpAndUnionID": {store.LinkFilter{CorpID: "wwtestc2", UnionID: "test-u1"}, []string{"wm2"}},
		"SinceIsInclusive": {store.LinkFilter{Since: b.start.Add(4 * time.Hour)}, []string{"wm5", "wm4"}},
		"Limit":            {store.LinkFilter{Limit: 2}, []string{"wm5", "wm4"}},
		"BeforeID":         {store.LinkFilter{BeforeID: ids[3], Limit: 2}, []string{"wm3", "wm2"}},
		"BeforeIDWithCorp": {store.LinkFilter{BeforeID: ids[4], CorpID: "wwtestc1"}, []string{"wm3", "wm1"}},
		"NoMatch":          {store.LinkFilter{UnionID: "test-nobody"}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			links, err := b.db.FindLinks(t.Context(), tc.filter)
			require.NoError(t, err)
			require.Equal(t, tc.want, externals(links))
		})
	}

	t.Run("CursorPagesThroughAll", func(t *testing.T) {
		var (
			got    []string
			before int64
		)
		for range 10 {
			links, err := b.db.FindLinks(t.Context(), store.LinkFilter{Limit: 2, BeforeID: before})
			require.NoError(t, err)
			got = append(got, externals(links)...)
			if len(links) < 2 {
				break
			}
			before = links[len(links)-1].ID
		}
		require.Equal(t, []string{"wm5", "wm4", "wm3", "wm2", "wm1"}, got)
	})
}

func (open exerciser) findCustomer(t *testing.T) {
	open.test(t, "ErrNotFound", Policy{}, func(t *testing.T, b *bundle) {
		_, err := b.db.FindCustomer(t.Context(), "wwtestcorp", "wmtest-nobody")
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	open.test(t, "ResolutionsAndLinks", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "p-1")
		r := resolution("wwtestcorp", "wmtest1", "p-1")
		r.Reason = "ok"
		b.resolve(t, r)
		r.ChatID = "wrtestchat"
		b.resolve(t, r)

		c := b.customer(t, "wwtestcorp", "wmtest1")
		require.Equal(t, "wwtestcorp", c.CorpID)
		require.Equal(t, "wmtest1", c.ExternalUserID)
		require.Len(t, c.Resolutions, 2)
		require.Empty(t, c.Resolutions[0].ChatID)
		require.Equal(t, "wrtestchat", c.Resolutions[1].ChatID)
		for _, res := range c.Resolutions {
			require.Equal(t, "p-1", res.PendingID)
			require.Equal(t, "test-staff", res.UserID)
			require.Equal(t, store.ResolutionMatched, res.State)
			require.Equal(t, "ok", res.Reason)
			require.True(t, res.ResolvedAt.Equal(b.start))
		}
		require.Len(t, c.Links, 1)
	})

	open.test(t, "ResolutionWithoutLink", Policy{}, func(t *testing.T, b *bundle) {
		b.resolve(t, resolution("wwtestcorp", "wmtest1", ""))
		c := b.customer(t, "wwtestcorp", "wmtest1")
		require.Len(t, c.Resolutions, 1)
		require.NotNil(t, c.Links)
		require.Empty(t, c.Links)
	})
}

func (open exerciser) fansToRenew(t *testing.T) {
	open.test(t, "Selection", Policy{}, func(t *testing.T, b *bundle) {
		// test-a: registered at start, unmatched; expires at start+90d.
		b.addFan(t, "test-a", "p-a")
		// test-b: registered at start, linked.
		b.addFan(t, "test-b", "p-b")
		b.resolve(t, resolution("wwtestcorp", "wmtest-b", "p-b"))
		// test-c: registered ten days later; test-new never registered; test-failed failed.
		b.clock.Advance(10 * 24 * time.Hour)
		b.addFan(t, "test-c", "p-c")
		b.addFan(t, "test-new", "")
		b.addFan(t, "test-failed", "")
		require.NoError(t, b.db.FailFan(t.Context(), "test-failed", "boom"))
		expiryA := b.start.Add(store.PendingIDLifetime)

		unionIDs := func(fans []store.FanInput) []string {
			var out []string
			for _, f := range fans {
				out = append(out, f.UnionID)
			}
			return out
		}

		t.Run("ExpiringOnly", func(t *testing.T) {
			fans, err := b.db.FansToRenew(t.Context(), expiryA.Add(time.Millisecond), 100)
			require.NoError(t, err)
			require.Equal(t, []string{"test-a", "test-b"}, unionIDs(fans), "linked fans renew too, after unmatched ones")
		})

		t.Run("BeforeIsExclusive", func(t *testing.T) {
			fans, err := b.db.FansToRenew(t.Context(), expiryA, 100)
			require.NoError(t, err)
			require.Empty(t, fans)
		})

		t.Run("UnmatchedFirstThenOldestExpiryAndLimit", func(t *testing.T) {
			far := b.start.Add(365 * 24 * time.Hour)
			fans, err := b.db.FansToRenew(t.Context(), far, 100)
			require.NoError(t, err)
			require.Equal(t, []string{"test-a", "test-c", "test-b"}, unionIDs(fans))
			fans, err = b.db.FansToRenew(t.Context(), far, 1)
			require.NoError(t, err)
			require.Equal(t, []string{"test-a"}, unionIDs(fans))
		})
	})

	open.test(t, "LinkedFanRenews", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a fan linked at one dealer is renewed too: another dealer
		// may add it after its pending_id expired.
		b.addFan(t, "test-b", "p-b")
		b.resolve(t, resolution("wwtestcorp", "wmtest-b", "p-b"))
		before := b.start.Add(store.PendingIDLifetime + time.Hour)
		fans, err := b.db.FansToRenew(t.Context(), before, 10)
		require.NoError(t, err)
		require.Equal(t, []store.FanInput{{UnionID: "test-b", OpenID: "o-test-b", Priority: store.DefaultFanPriority}}, fans)
	})

	open.test(t, "HighestPriorityFirst", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a fan the brand values more is renewed before others,
		// whatever their expiry or links.
		b.addFan(t, "test-low", "p-low")
		b.clock.Advance(time.Hour)
		b.addFan(t, "test-high", "p-high")
		require.NoError(t, b.db.SetFanPriority(t.Context(), "test-high", 90))
		require.NoError(t, b.db.SetFanPriority(t.Context(), "test-low", 10))
		fans, err := b.db.FansToRenew(t.Context(), b.start.Add(store.PendingIDLifetime+2*time.Hour), 10)
		require.NoError(t, err)
		require.Equal(t, []store.FanInput{{UnionID: "test-high", OpenID: "o-test-high", Priority: 90},
			{UnionID: "test-low", OpenID: "o-test-low", Priority: 10}}, fans)
	})

	open.test(t, "RecentlyActiveFirstWithinPriority", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure renewals go by priority, then by the UTC day the fan was
		// last active (unknown last), then as before: unmatched first,
		// soonest expiry first.
		yesterday := b.start.Add(-24 * time.Hour)
		register := func(f store.FanInput, pendingID string) {
			t.Helper()
			_, err := b.db.RegisterFans(t.Context(), []store.FanInput{f}, store.RegisterOpts{NoJob: true})
			require.NoError(t, err)
			_, err = b.db.RecordFanPendingID(t.Context(), f.UnionID, pendingID)
			require.NoError(t, err)
			b.clock.Advance(time.Minute)
		}
		register(store.FanInput{UnionID: "test-idle", OpenID: "o"}, "p-idle")
		register(store.FanInput{UnionID: "test-vip-old", OpenID: "o", Priority: 90, LastActive: b.start.Add(-300 * 24 * time.Hour)}, "p-vip")
		register(store.FanInput{UnionID: "test-linked-active", OpenID: "o", LastActive: yesterday.Add(time.Hour)}, "p-linked")
		b.resolve(t, resolution("wwtestcorp", "wmtest-linked", "p-linked"))
		register(store.FanInput{UnionID: "test-active", OpenID: "o", LastActive: yesterday}, "p-active")
		register(store.FanInput{UnionID: "test-active-later", OpenID: "o", LastActive: yesterday.Add(2 * time.Hour)}, "p-active-later")
		fans, err := b.db.FansToRenew(t.Context(), b.start.Add(store.PendingIDLifetime+time.Hour), 10)
		require.NoError(t, err)
		var got []string
		for _, f := range fans {
			got = append(got, f.UnionID)
		}
		require.Equal(t, []string{"test-vip-old", "test-active", "test-active-later", "test-linked-active", "test-idle"}, got,
			"the same day orders as before: unmatched, then the soonest expiry, not the later hour")
	})
}

func (open exerciser) renewalObservations(t *testing.T, newDSN func(tb testing.TB) string) {
	open.test(t, "CountsRenewalsOfLiveIDs", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure only a pending_id recorded while the fan held a live one
		// counts, as the same id or a new one (§9 #10).
		observed := func() store.RenewalObservations {
			t.Helper()
			o, err := b.db.RenewalObservations(t.Context())
			require.NoError(t, err)
			return o
		}
		require.Equal(t, store.RenewalObservations{}, observed(), "nothing observed yet")

		b.addFan(t, "test-a", "p-a1")
		b.addFan(t, "test-b", "p-b1")
		require.Equal(t, store.RenewalObservations{}, observed(), "a first registration teaches nothing")

		b.clock.Advance(store.PendingIDLifetime - 7*24*time.Hour)
		_, err := b.db.RecordFanPendingID(t.Context(), "test-a", "p-a1")
		require.NoError(t, err)
		require.Equal(t, store.RenewalObservations{SameID: 1}, observed(), "the live id given back")
		_, err = b.db.RecordFanPendingID(t.Context(), "test-b", "p-b2")
		require.NoError(t, err)
		require.Equal(t, store.RenewalObservations{SameID: 1, NewID: 1}, observed(), "a new id while the old one lives")

		// test-a's p-a1 expires: a renewal after expiry teaches nothing,
		// whatever id it returns.
		b.clock.Advance(7*24*time.Hour + time.Millisecond)
		_, err = b.db.RecordFanPendingID(t.Context(), "test-a", "p-a2")
		require.NoError(t, err)
		require.Equal(t, store.RenewalObservations{SameID: 1, NewID: 1}, observed())
		_, err = b.db.RecordFanPendingID(t.Context(), "test-a", "p-a2")
		require.NoError(t, err)
		require.Equal(t, store.RenewalObservations{SameID: 2, NewID: 1}, observed(), "counts add up")
	})

	t.Run("SurviveReopen", func(t *testing.T) {
		t.Parallel()
		// Ensure the counts are the database's, not a process's: the next
		// process (or another instance on PostgreSQL) sees them.
		dsn := newDSN(t)
		b := &bundle{db: open(t, store.Config{DSN: dsn, Jobs: Policy{}})}
		b.addFan(t, "test-a", "p-a1")
		_, err := b.db.RecordFanPendingID(t.Context(), "test-a", "p-a1")
		require.NoError(t, err)
		require.NoError(t, b.db.Close())
		o, err := open(t, store.Config{DSN: dsn}).RenewalObservations(t.Context())
		require.NoError(t, err)
		require.Equal(t, store.RenewalObservations{SameID: 1}, o)
	})
}

func (open exerciser) registrationQueue(t *testing.T) {
	open.test(t, "Order", nil, func(t *testing.T, b *bundle) {
		// Ensure interactive fans lead, then the rest by the fan's
		// priority, renewals before first registrations among equals,
		// oldest first.
		queue := func(class int, fans ...store.FanInput) {
			t.Helper()
			_, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{Priority: class})
			require.NoError(t, err)
			b.clock.Advance(time.Second)
		}
		b.addFan(t, "test-renew-50", "p-1")
		b.addFan(t, "test-renew-10", "p-2")
		queue(store.QueueBulk, store.FanInput{UnionID: "test-bulk-50-old", OpenID: "o"})
		queue(store.QueueBulk, store.FanInput{UnionID: "test-bulk-90", OpenID: "o", Priority: 90}, store.FanInput{UnionID: "test-bulk-50-new", OpenID: "o"})
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-renew-50", OpenID: "o-test-renew-50"}, {UnionID: "test-renew-10", OpenID: "o-test-renew-10", Priority: 10}},
			store.RegisterOpts{Priority: store.QueueRenew, Renew: true})
		require.NoError(t, err)
		queue(store.QueueInteractive, store.FanInput{UnionID: "test-interactive", OpenID: "o", Priority: 1})

		require.Equal(t, []string{"test-interactive", "test-bulk-90", "test-renew-50", "test-bulk-50-old", "test-bulk-50-new", "test-renew-10"}, b.nextFans(t, 10))
		require.Equal(t, []string{"test-interactive", "test-bulk-90"}, b.nextFans(t, 2), "limit")
		counts, err := b.db.QueuedFans(t.Context())
		require.NoError(t, err)
		require.Equal(t, map[int]int64{store.QueueInteractive: 1, store.QueueBulk: 3, store.QueueRenew: 2}, counts)
		backlog, err := b.db.Backlog(t.Context(), time.Time{})
		require.NoError(t, err)
		require.Equal(t, counts, backlog.Queued)
		require.Equal(t, []store.QueuedCount{
			{Priority: 1, Class: store.QueueInteractive, Count: 1}, {Priority: 90, Class: store.QueueBulk, Count: 1},
			{Priority: 50, Class: store.QueueRenew, Count: 1}, {Priority: 50, Class: store.QueueBulk, Count: 2},
			{Priority: 10, Class: store.QueueRenew, Count: 1},
		}, backlog.QueuedBy, "in queue order")

		require.NoError(t, b.db.SetFanPriority(t.Context(), "test-renew-10", 100))
		require.Equal(t, []string{"test-interactive", "test-renew-10"}, b.nextFans(t, 2), "a new priority takes effect at once")
	})

	open.test(t, "RecencyWithinPriority", nil, func(t *testing.T, b *bundle) {
		// Ensure that within a priority and class the fans last active on a
		// later UTC day go first, those of one day oldest queued first (not
		// by the hour they were active), a fan of unknown activity last;
		// priority beats recency, and a renewal beats a first registration
		// of its priority however recent.
		day := func(daysAgo, hour int) time.Time {
			return time.Date(2026, 3, 1-daysAgo, hour, 0, 0, 0, time.UTC)
		}
		queue := func(opts store.RegisterOpts, fans ...store.FanInput) {
			t.Helper()
			_, err := b.db.RegisterFans(t.Context(), fans, opts)
			require.NoError(t, err)
			b.clock.Advance(time.Second)
		}
		bulk := store.RegisterOpts{Priority: store.QueueBulk}
		b.addFan(t, "test-renew-idle", "p-1")
		queue(bulk, store.FanInput{UnionID: "test-unknown", OpenID: "o"})
		queue(bulk, store.FanInput{UnionID: "test-old", OpenID: "o", LastActive: day(30, 12)},
			store.FanInput{UnionID: "test-day-early", OpenID: "o", LastActive: day(1, 2)})
		queue(bulk, store.FanInput{UnionID: "test-day-late", OpenID: "o", LastActive: day(1, 20)},
			store.FanInput{UnionID: "test-vip-unknown", OpenID: "o", Priority: 90})
		queue(bulk, store.FanInput{UnionID: "test-today", OpenID: "o", LastActive: day(0, 7)})
		queue(store.RegisterOpts{Priority: store.QueueRenew, Renew: true}, store.FanInput{UnionID: "test-renew-idle", OpenID: "o-test-renew-idle"})

		require.Equal(t, []string{"test-vip-unknown", "test-renew-idle", "test-today", "test-day-early", "test-day-late", "test-old", "test-unknown"},
			b.nextFans(t, 10))

		require.NoError(t, b.db.RequeueFan(t.Context(), "test-day-early", "system busy"))
		require.Equal(t, []string{"test-vip-unknown", "test-renew-idle", "test-today", "test-day-late", "test-day-early", "test-old", "test-unknown"},
			b.nextFans(t, 10), "a requeued fan goes behind the others of its day")

		recent := day(0, 6)
		require.NoError(t, b.db.UpdateFan(t.Context(), "test-unknown", store.FanUpdate{LastActive: &recent}))
		queue(bulk, store.FanInput{UnionID: "test-old", OpenID: "o", LastActive: day(0, 1)})
		require.Equal(t, []string{"test-vip-unknown", "test-renew-idle", "test-unknown", "test-old", "test-today"}, b.nextFans(t, 5),
			"a new last-active time takes effect at once, and today's fans go oldest queued first")
	})

	open.test(t, "LeftOnPendingIDOrFailure", nil, func(t *testing.T, b *bundle) {
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-a", OpenID: "o"}, {UnionID: "test-b", OpenID: "o"}, {UnionID: "test-c", OpenID: "o"}}, store.RegisterOpts{})
		require.NoError(t, err)
		_, err = b.db.RecordFanPendingID(t.Context(), "test-a", "p-a")
		require.NoError(t, err)
		require.NoError(t, b.db.FailFan(t.Context(), "test-b", "610014"))
		require.Equal(t, []string{"test-c"}, b.nextFans(t, 10))
	})

	open.test(t, "RequeueGoesBehindItsEquals", nil, func(t *testing.T, b *bundle) {
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-a", OpenID: "o"}, {UnionID: "test-b", OpenID: "o"}, {UnionID: "test-vip", OpenID: "o", Priority: 90}}, store.RegisterOpts{})
		require.NoError(t, err)
		b.clock.Advance(time.Second)
		require.NoError(t, b.db.RequeueFan(t.Context(), "test-vip", "system busy"))
		require.NoError(t, b.db.RequeueFan(t.Context(), "test-a", "system busy"))
		require.Equal(t, []string{"test-vip", "test-b", "test-a"}, b.nextFans(t, 10), "behind its equals, not behind lower priorities")
		fan := b.fan(t, "test-a")
		require.Equal(t, store.FanNew, fan.State)
		require.Equal(t, "system busy", fan.LastError)
		require.NoError(t, b.db.RequeueFan(t.Context(), "test-nobody", "x"), "a fan not queued is left alone")
	})

	open.test(t, "RetriedFanQueued", nil, func(t *testing.T, b *bundle) {
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-a", OpenID: "o"}}, store.RegisterOpts{})
		require.NoError(t, err)
		require.NoError(t, b.db.FailFan(t.Context(), "test-a", "48002"))
		require.Empty(t, b.nextFans(t, 10))
		n, err := b.db.RetryFans(t.Context(), store.RetryFilter{})
		require.NoError(t, err)
		require.Equal(t, int64(1), n)
		require.Equal(t, []string{"test-a"}, b.nextFans(t, 10))
	})
}
