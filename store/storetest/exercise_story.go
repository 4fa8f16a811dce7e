package storetest

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
)

// requireWhy checks that exactly one of the story's reasons contains each
// fragment, and that there are no others.
func requireWhy(t *testing.T, s *store.Story, fragments ...string) {
	t.Helper()
	require.Len(t, s.Why, len(fragments), "why: %q", s.Why)
	for _, f := range fragments {
		n := 0
		for _, w := range s.Why {
			if strings.Contains(w, f) {
				n++
			}
		}
		require.Equal(t, 1, n, "why %q should say %q once", s.Why, f)
	}
}

// stepsSay returns the story's steps as text, checking they are in order.
func stepsSay(t *testing.T, s *store.Story) []string {
	t.Helper()
	out := make([]string, len(s.Steps))
	for i, st := range s.Steps {
		if i > 0 {
			require.False(t, st.At.Before(s.Steps[i-1].At), "steps out of order: %+v", s.Steps)
		}
		out[i] = st.What
	}
	return out
}

func (open exerciser) story(t *testing.T) {
	open.test(t, "FanLinkedThroughItsCustomerEvent", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a linked fan's story holds its pending_id, the customer's
		// add, lookup and holder, the link, in order, and no reason.
		b.addFan(t, "test-u1", "p-1")
		b.clock.Advance(time.Minute)
		add := NewEvent(store.KindAddExternalContact)
		add.ExternalUserID = "wmtest1"
		_, err := b.db.SaveEvent(t.Context(), add)
		require.NoError(t, err)
		b.clock.Advance(time.Minute)
		r := resolution("wwtestcorp", "wmtest1", "p-1")
		r.EventID = add.ID
		require.Len(t, b.resolve(t, r), 1)

		s, err := b.db.FanStory(t.Context(), "test-u1")
		require.NoError(t, err)
		require.Len(t, s.Fans, 1)
		require.Equal(t, "test-u1", s.Fans[0].UnionID)
		require.Equal(t, store.FanRegistered, s.Fans[0].State)
		require.Equal(t, []string{"p-1"}, pendingIDsOf(s.Fans[0]))
		require.Len(t, s.Customers, 1)
		c := s.Customers[0]
		require.Equal(t, "wmtest1", c.ExternalUserID)
		require.Len(t, c.Lookups, 1)
		require.Equal(t, "p-1", c.Lookups[0].PendingID)
		require.Equal(t, store.ResolutionMatched, c.Lookups[0].State)
		require.NotNil(t, c.Lookups[0].ExpiresAt)
		require.Len(t, c.Follows, 1)
		require.Equal(t, store.Follow{UserID: "test-staff", Active: true, Source: store.KindAddExternalContact,
			ChangedAt: add.CreateTime, EventID: add.ID}, c.Follows[0])
		require.Len(t, c.Events, 1)
		require.Equal(t, add.ID, c.Events[0].ID)
		require.Equal(t, store.EventResolved, c.Events[0].State)
		require.Len(t, s.Links, 1)
		require.True(t, s.Links[0].Active)
		require.Empty(t, s.Why)

		steps := stepsSay(t, s)
		require.Contains(t, steps, "fan test-u1 registered with pendinglink")
		require.Contains(t, steps, "lookup of wwtestcorp/wmtest1: pending_id p-1")
		require.Equal(t, "linked fan test-u1 to wwtestcorp/wmtest1", steps[len(steps)-1])
	})

	open.test(t, "FanNeverLookedUpNorChecked", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a registered fan no customer resolved to says it waits for
		// its check against unionid_to_external_userid, and after the check
		// that none was found.
		b.addFan(t, "test-u1", "p-1")
		s, err := b.db.FanStory(t.Context(), "test-u1")
		require.NoError(t, err)
		require.Empty(t, s.Customers)
		require.Empty(t, s.Links)
		requireWhy(t, s, "not checked against unionid_to_external_userid yet")

		_, err = b.db.LinkExisting(t.Context(), "test-u1", nil)
		require.NoError(t, err)
		s, err = b.db.FanStory(t.Context(), "test-u1")
		require.NoError(t, err)
		require.NotNil(t, s.Fans[0].CheckedAt)
		requireWhy(t, s, "unionid_to_external_userid found none at")
		require.Contains(t, stepsSay(t, s), "fan test-u1 checked against unionid_to_external_userid")
	})

	open.test(t, "FanQueuedOrRefused", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a fan waiting for its pending_id says so, and a refused
		// fan gives WeCom's reason.
		b.addFan(t, "test-u1", "")
		s, err := b.db.FanStory(t.Context(), "test-u1")
		require.NoError(t, err)
		require.Equal(t, store.FanNew, s.Fans[0].State)
		require.Nil(t, s.Fans[0].LastActiveAt, "never said")
		requireWhy(t, s, "waits for its registration")

		active := b.clock.Now().Add(-time.Hour)
		require.NoError(t, b.db.UpdateFan(t.Context(), "test-u1", store.FanUpdate{LastActive: &active}))
		s, err = b.db.FanStory(t.Context(), "test-u1")
		require.NoError(t, err)
		require.NotNil(t, s.Fans[0].LastActiveAt)
		require.True(t, active.Equal(*s.Fans[0].LastActiveAt), "last active %s, want %s", s.Fans[0].LastActiveAt, active)

		require.NoError(t, b.db.FailFan(t.Context(), "test-u1", "wecom: 610016 corp not certified"))
		s, err = b.db.FanStory(t.Context(), "test-u1")
		require.NoError(t, err)
		requireWhy(t, s, "refused by WeCom (wecom: 610016 corp not certified)")
	})

	open.test(t, "FanPendingIDExpired", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a fan whose only pending_id expired says it waits for
		// renewal.
		b.addFan(t, "test-u1", "p-1")
		b.clock.Advance(store.PendingIDLifetime + time.Hour)
		s, err := b.db.FanStory(t.Context(), "test-u1")
		require.NoError(t, err)
		requireWhy(t, s, "pending_id expired at", "not checked against unionid_to_external_userid yet")
	})

	open.test(t, "CustomerWhoseFanIsNotRegistered", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a customer looked up to a pending_id no fan holds names
		// that pending_id, and is linked (and says nothing more) once the
		// fan registers.
		b.resolve(t, resolution("wwtestcorp", "wmtest1", "p-1"))
		s, err := b.db.CustomerStory(t.Context(), "wwtestcorp", "wmtest1")
		require.NoError(t, err)
		require.Empty(t, s.Fans)
		require.Len(t, s.Customers, 1)
		require.Equal(t, store.ResolutionResolved, s.Customers[0].Lookups[0].State)
		requireWhy(t, s, "no registered fan holds wwtestcorp/wmtest1's pending_id p-1")

		require.Len(t, b.addFan(t, "test-u1", "p-1"), 1)
		s, err = b.db.CustomerStory(t.Context(), "wwtestcorp", "wmtest1")
		require.NoError(t, err)
		require.Len(t, s.Fans, 1)
		require.Equal(t, "test-u1", s.Fans[0].UnionID)
		require.Len(t, s.Links, 1)
		require.Empty(t, s.Why)
	})

	open.test(t, "CustomerWithoutPendingID", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a customer WeCom gave no pending_id says so.
		b.resolve(t, resolution("wwtestcorp", "wmtest1", ""))
		s, err := b.db.CustomerStory(t.Context(), "wwtestcorp", "wmtest1")
		require.NoError(t, err)
		require.Equal(t, store.ResolutionUnmatched, s.Customers[0].Lookups[0].State)
		requireWhy(t, s, "WeCom gave wwtestcorp/wmtest1 no pending_id")
		require.Contains(t, stepsSay(t, s), "lookup of wwtestcorp/wmtest1: WeCom gave no pending_id")
	})

	open.test(t, "CustomerAddedNotLookedUpYet", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a customer known only from its add event says its lookup
		// is still to come, and shows the event through its holder.
		add := NewEvent(store.KindAddExternalContact)
		_, err := b.db.SaveEvent(t.Context(), add)
		require.NoError(t, err)
		s, err := b.db.CustomerStory(t.Context(), add.CorpID, add.ExternalUserID)
		require.NoError(t, err)
		require.Empty(t, s.Customers[0].Lookups)
		require.Len(t, s.Customers[0].Events, 1)
		require.Equal(t, add.ID, s.Customers[0].Events[0].ID)
		requireWhy(t, s, "has not been looked up yet")
	})

	open.test(t, "CustomerWhoseLinkEnded", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a customer whose link ended says when and why.
		b.link(t)
		require.Len(t, b.end(t), 1)
		s, err := b.db.CustomerStory(t.Context(), "wwtestcorp", "wmtest1")
		require.NoError(t, err)
		require.Len(t, s.Links, 1)
		require.False(t, s.Links[0].Active)
		requireWhy(t, s, "the link of fan test-u1 to wwtestcorp/wmtest1 ended at", "no staff member or chat of wwtestcorp holds wmtest1 any more")
		require.Contains(t, stepsSay(t, s)[len(s.Steps)-1], "link of fan test-u1 to wwtestcorp/wmtest1 ended")
	})

	open.test(t, "UnknownOrInvalid", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure unknown ids are ErrNotFound and empty ones ErrInvalid.
		_, err := b.db.FanStory(t.Context(), "test-nobody")
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = b.db.CustomerStory(t.Context(), "wwtestcorp", "wmnobody")
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = b.db.FanStory(t.Context(), "")
		require.ErrorIs(t, err, store.ErrInvalid)
		_, err = b.db.CustomerStory(t.Context(), "wwtestcorp", "")
		require.ErrorIs(t, err, store.ErrInvalid)
	})
}

func pendingIDsOf(f store.StoryFan) []string {
	out := make([]string, len(f.PendingIDs))
	for i, p := range f.PendingIDs {
		out[i] = p.PendingID
	}
	return out
}

func (open exerciser) activity(t *testing.T) {
	open.test(t, "BucketsEventsByMinuteAndLinksByHour", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure events count in the minute they were stored and links in
		// the hour they were made, with empty buckets as zeros and older
		// ones left out.
		b.saveEvent(t, store.KindEditExternalContact) // falls out of a 1h window
		b.clock.Advance(2 * time.Hour)
		b.saveEvent(t, store.KindEditExternalContact)
		b.saveEvent(t, store.KindEditExternalContact)
		b.link(t)
		b.clock.Advance(3 * time.Minute)
		b.saveEvent(t, store.KindEditExternalContact)

		a, err := b.db.Activity(t.Context(), time.Hour)
		require.NoError(t, err)
		now := b.clock.Now()
		require.True(t, a.Since.Equal(now.Truncate(time.Minute).Add(-59*time.Minute)), "since %s", a.Since)
		require.Len(t, a.EventsPerMinute, 60)
		want := make([]int64, 60)
		want[59-3], want[59] = 2, 1
		require.Equal(t, want, a.EventsPerMinute)
		require.True(t, a.HoursSince.Equal(now.Truncate(time.Hour)))
		require.Equal(t, []int64{1}, a.LinksPerHour)

		a, err = b.db.Activity(t.Context(), 3*time.Hour)
		require.NoError(t, err)
		require.Len(t, a.EventsPerMinute, 180)
		var total int64
		for _, n := range a.EventsPerMinute {
			total += n
		}
		require.Equal(t, int64(4), total)
		require.Equal(t, []int64{0, 0, 1}, a.LinksPerHour)
	})

	open.test(t, "RejectsOddWindows", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure windows that are not whole hours within the limit are refused.
		for _, w := range []time.Duration{0, 30 * time.Minute, 90 * time.Minute, store.MaxActivityWindow + time.Hour} {
			_, err := b.db.Activity(t.Context(), w)
			require.ErrorIs(t, err, store.ErrInvalid, "window %s", w)
		}
	})
}

func (open exerciser) outboxHealth(t *testing.T) {
	open.test(t, "FollowsDeliveries", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure the health counts what waits, what failed with its error,
		// and when the last delivery was.
		h, err := b.db.OutboxHealth(t.Context())
		require.NoError(t, err)
		require.Equal(t, store.OutboxHealth{}, h)

		l := b.link(t)
		written := b.clock.Now()
		h, err = b.db.OutboxHealth(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(1), h.Undelivered)
		require.Zero(t, h.Failing)
		require.True(t, h.OldestUndelivered.Equal(written))

		o := b.nextOutbox(t, l.ID)
		require.NoError(t, b.db.MarkOutbox(t.Context(), o, "webhook: 502 Bad Gateway"))
		h, err = b.db.OutboxHealth(t.Context())
		require.NoError(t, err)
		require.Equal(t, store.OutboxHealth{Undelivered: 1, Failing: 1, OldestUndelivered: h.OldestUndelivered,
			LastError: "webhook: 502 Bad Gateway"}, h)

		delivered := b.clock.Advance(time.Minute)
		require.NoError(t, b.db.MarkOutbox(t.Context(), o, ""))
		h, err = b.db.OutboxHealth(t.Context())
		require.NoError(t, err)
		require.Zero(t, h.Undelivered)
		require.Nil(t, h.OldestUndelivered)
		require.Empty(t, h.LastError)
		require.True(t, h.LastDelivered.Equal(delivered))
	})
}
