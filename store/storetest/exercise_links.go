package storetest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
)

// resolution is a customer of a corp resolved by test-staff.
func resolution(corp, external, pendingID string) store.Resolution {
	return store.Resolution{CorpID: corp, ExternalUserID: external, UserID: "test-staff", PendingID: pendingID}
}

func (open exerciser) recordResolution(t *testing.T) {
	open.test(t, "LinksFanRegisteredEarlier", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a customer resolved to a fan's live pending_id is linked to that fan.
		require.Empty(t, b.addFan(t, "test-u1", "p-1"))
		matched := b.clock.Advance(time.Hour)

		links := b.resolve(t, resolution("wwtestcorp", "wmtest1", "p-1"))
		require.Len(t, links, 1)
		l := links[0]
		require.NotZero(t, l.ID)
		require.Equal(t, store.Link{
			ID: l.ID, UnionID: "test-u1", OpenID: "o-test-u1", PendingID: "p-1", CorpID: "wwtestcorp",
			ExternalUserID: "wmtest1", UserID: "test-staff", Active: true, MatchedAt: l.MatchedAt,
		}, l)
		require.True(t, l.MatchedAt.Equal(matched))

		c := b.customer(t, "wwtestcorp", "wmtest1")
		require.Len(t, c.Resolutions, 1)
		require.Equal(t, store.ResolutionMatched, c.Resolutions[0].State)
		require.Equal(t, int64(1), b.counts(t).Links)
		b.requireDelivers(t, l.ID, store.OutboxLinkCreated)
	})

	open.test(t, "ReplayCreatesNothing", Policy{Notify: true}, func(t *testing.T, b *bundle) {
		// Ensure matching is idempotent: the same resolution twice links once.
		b.addFan(t, "test-u1", "p-1")
		r := resolution("wwtestcorp", "wmtest1", "p-1")
		require.Len(t, b.resolve(t, r), 1)
		require.Empty(t, b.resolve(t, r))
		c := b.counts(t)
		require.Equal(t, store.Counts{
			Fans: 1, FanPendingIDs: 1, Resolutions: 1, Links: 1, LinksActive: 1, Outbox: 1, OutboxUndelivered: 1, Jobs: 1,
		}, c)
		require.Len(t, b.jobsWhat(t, JobNotification), 1)
	})

	open.test(t, "ConcurrentBothOrdersLinkOnce", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a resolution and a registration of the same pending_id that
		// race still link exactly once: one of them must see the other.
		const n = 10
		fans := make([]store.FanInput, n)
		for i := range fans {
			fans[i] = store.FanInput{UnionID: fmt.Sprintf("test-u%d", i), OpenID: "o"}
		}
		_, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			created int
			errs    []error
		)
		// add counts links, and checks each caller got only its own (the
		// resolutions are group-committed, so answers must not be mixed up).
		add := func(pid string, links []store.Link, err error) {
			mu.Lock()
			defer mu.Unlock()
			created += len(links)
			if err != nil {
				errs = append(errs, err)
			}
			for _, l := range links {
				if l.PendingID != pid || l.ExternalUserID != "wm-"+pid {
					errs = append(errs, fmt.Errorf("caller of %s got link %+v", pid, l))
				}
			}
		}
		for i, f := range fans {
			pid := fmt.Sprintf("p-%d", i)
			wg.Go(func() {
				links, err := b.db.RecordResolution(context.Background(), resolution("wwtestcorp", "wm-"+pid, pid))
				add(pid, links, err)
			})
			wg.Go(func() {
				links, err := b.db.RecordFanPendingID(context.Background(), f.UnionID, pid)
				add(pid, links, err)
			})
		}
		wg.Wait()
		require.Empty(t, errs)
		require.Equal(t, n, created)
		c := b.counts(t)
		require.Equal(t, int64(n), c.Links)
		require.Equal(t, int64(n), c.Outbox)
	})

	open.test(t, "MatchesUntilFanPendingIDExpires", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a pending_id still matches a millisecond before its 90 days end.
		b.addFan(t, "test-u1", "p-1")
		b.clock.Advance(store.PendingIDLifetime - time.Millisecond)
		require.Len(t, b.resolve(t, resolution("wwtestcorp", "wmtest1", "p-1")), 1)
	})

	open.test(t, "ExpiredFanPendingIDNeverMatches", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a fan's pending_id older than 90 days links nothing.
		b.addFan(t, "test-u1", "p-1")
		b.clock.Advance(store.PendingIDLifetime)
		require.Empty(t, b.resolve(t, resolution("wwtestcorp", "wmtest1", "p-1")))
		c := b.counts(t)
		require.Zero(t, c.Links)
		require.Zero(t, c.Outbox)
		require.Equal(t, store.ResolutionResolved, b.customer(t, "wwtestcorp", "wmtest1").Resolutions[0].State)
	})

	open.test(t, "LinksEveryFanWithThePendingIDOnce", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure one customer seen in two chats of a corp is one link, and the
		// same person in two corps is two.
		b.addFan(t, "test-u1", "p-1")
		r := resolution("wwtestcorp", "wmtest1", "p-1")
		r.ChatID = "wrtestchat1"
		links := b.resolve(t, r)
		require.Len(t, links, 1)
		require.Equal(t, "wrtestchat1", links[0].ChatID)
		r.ChatID = "wrtestchat2"
		require.Empty(t, b.resolve(t, r))
		require.Len(t, b.resolve(t, resolution("wwtestcorp2", "wmtest9", "p-1")), 1)
		c := b.counts(t)
		require.Equal(t, int64(2), c.Links)
		require.Equal(t, int64(3), c.Resolutions)
	})

	open.test(t, "EventPendingToResolved", Policy{}, func(t *testing.T, b *bundle) {
		ev := b.saveEvent(t, store.KindAddExternalContact)
		require.Equal(t, store.EventPending, b.event(t, ev.ID).State)

		r := resolution(ev.CorpID, ev.ExternalUserID, "p-1")
		r.EventID = ev.ID
		b.resolve(t, r)
		require.Equal(t, store.EventResolved, b.event(t, ev.ID).State)
		require.Equal(t, ev.ID, b.customer(t, ev.CorpID, ev.ExternalUserID).Resolutions[0].EventID)
	})

	open.test(t, "EventPendingToUnmatched", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure an answer without a pending_id leaves the customer unmatched.
		ev := b.saveEvent(t, store.KindAddExternalContact)
		r := resolution(ev.CorpID, ev.ExternalUserID, "")
		r.EventID, r.Reason = ev.ID, "no pending_id after one delayed retry"
		require.Empty(t, b.resolve(t, r))
		got := b.event(t, ev.ID)
		require.Equal(t, store.EventUnmatched, got.State)
		require.Equal(t, r.Reason, got.Reason)
		c := b.customer(t, ev.CorpID, ev.ExternalUserID)
		require.Equal(t, store.ResolutionUnmatched, c.Resolutions[0].State)
		require.Empty(t, c.Resolutions[0].PendingID)
	})

	open.test(t, "EventPendingToFailed", Policy{}, func(t *testing.T, b *bundle) {
		ev := b.saveEvent(t, store.KindAddExternalContact)
		r := resolution(ev.CorpID, ev.ExternalUserID, "")
		r.EventID, r.Failed, r.Reason = ev.ID, true, "wecom: errcode 40096"
		b.resolve(t, r)
		got := b.event(t, ev.ID)
		require.Equal(t, store.EventFailed, got.State)
		require.Equal(t, "wecom: errcode 40096", got.Reason)
		require.Equal(t, store.ResolutionFailed, b.customer(t, ev.CorpID, ev.ExternalUserID).Resolutions[0].State)
	})

	open.test(t, "ChatEventFailedWhileAMemberIsFailed", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a failed member keeps its chat event failed until it resolves, and an unmatched one never undoes a resolved one.
		ev := b.saveEvent(t, store.KindAddMember)
		require.Len(t, ev.Members, 2)
		member := func(i int, pendingID string, failed bool) {
			r := resolution(ev.CorpID, ev.Members[i], pendingID)
			r.ChatID, r.EventID, r.Failed = ev.ChatID, ev.ID, failed
			if failed {
				r.Reason = "gave up"
			}
			b.resolve(t, r)
		}
		member(0, "p-1", false)
		member(1, "", true)
		require.Equal(t, store.EventFailed, b.event(t, ev.ID).State, "a failed member keeps it failed, to be retried")
		member(1, "", false)
		require.Equal(t, store.EventResolved, b.event(t, ev.ID).State, "the failed member unmatched once retried")
	})

	open.test(t, "ChatEventResolvesOnceItsFailedMemberDoes", Policy{}, func(t *testing.T, b *bundle) {
		ev := b.saveEvent(t, store.KindAddMember)
		r := resolution(ev.CorpID, ev.Members[0], "")
		r.ChatID, r.EventID, r.Failed, r.Reason = ev.ChatID, ev.ID, true, "gave up"
		b.resolve(t, r)
		require.Equal(t, store.EventFailed, b.event(t, ev.ID).State)

		r = resolution(ev.CorpID, ev.Members[1], "p-2")
		r.ChatID, r.EventID = ev.ChatID, ev.ID
		b.resolve(t, r)
		got := b.event(t, ev.ID)
		require.Equal(t, store.EventFailed, got.State, "the failed member is still to retry")
		require.Equal(t, "gave up", got.Reason)

		r = resolution(ev.CorpID, ev.Members[0], "p-1") // its retry
		r.ChatID, r.EventID = ev.ChatID, ev.ID
		b.resolve(t, r)
		got = b.event(t, ev.ID)
		require.Equal(t, store.EventResolved, got.State)
		require.Empty(t, got.Reason)
	})

	open.test(t, "FailureKeepsEarlierPendingID", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a later failed lookup never wipes a pending_id found earlier,
		// so a fan registered afterwards still links.
		b.resolve(t, resolution("wwtestcorp", "wmtest1", "p-1"))
		failed := resolution("wwtestcorp", "wmtest1", "")
		failed.Failed, failed.Reason = true, "wecom: errcode -1"
		b.resolve(t, failed)

		c := b.customer(t, "wwtestcorp", "wmtest1")
		require.Len(t, c.Resolutions, 1)
		require.Equal(t, "p-1", c.Resolutions[0].PendingID)
		require.Equal(t, store.ResolutionResolved, c.Resolutions[0].State)

		links := b.addFan(t, "test-u1", "p-1")
		require.Len(t, links, 1)
		require.Equal(t, "wmtest1", links[0].ExternalUserID)
	})

	open.test(t, "FailureKeepsMatchedState", Policy{}, func(t *testing.T, b *bundle) {
		b.link(t)
		failed := resolution("wwtestcorp", "wmtest1", "")
		failed.Failed, failed.Reason = true, "gave up"
		b.resolve(t, failed)
		c := b.customer(t, "wwtestcorp", "wmtest1")
		require.Equal(t, store.ResolutionMatched, c.Resolutions[0].State)
		require.Equal(t, "p-1", c.Resolutions[0].PendingID)
		require.Len(t, c.Links, 1)
		require.True(t, c.Links[0].Active)
	})

	open.test(t, "NotificationJobsCommitWithTheLink", Policy{Notify: true}, func(t *testing.T, b *bundle) {
		l := b.link(t)
		require.Equal(t, []Job{{What: JobNotification, Subject: strconv.FormatInt(l.ID, 10)}}, Jobs(t, b.db))
	})
}

func (open exerciser) recordFanPendingID(t *testing.T) {
	open.test(t, "LinksCustomerResolvedEarlier", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a fan registered after its customer was resolved links at once.
		require.Empty(t, b.resolve(t, resolution("wwtestcorp", "wmtest1", "p-1")))
		require.Equal(t, store.ResolutionResolved, b.customer(t, "wwtestcorp", "wmtest1").Resolutions[0].State)

		matched := b.clock.Advance(time.Hour)
		links := b.addFan(t, "test-u1", "p-1")
		require.Len(t, links, 1)
		l := links[0]
		require.Equal(t, store.Link{
			ID: l.ID, UnionID: "test-u1", OpenID: "o-test-u1", PendingID: "p-1", CorpID: "wwtestcorp",
			ExternalUserID: "wmtest1", UserID: "test-staff", Active: true, MatchedAt: l.MatchedAt,
		}, l)
		require.True(t, l.MatchedAt.Equal(matched))
		require.Equal(t, store.ResolutionMatched, b.customer(t, "wwtestcorp", "wmtest1").Resolutions[0].State)
		require.Equal(t, store.FanRegistered, b.fan(t, "test-u1").State)
		b.requireDelivers(t, l.ID, store.OutboxLinkCreated)
	})

	open.test(t, "ReplayCreatesNothing", Policy{Notify: true}, func(t *testing.T, b *bundle) {
		b.resolve(t, resolution("wwtestcorp", "wmtest1", "p-1"))
		require.Len(t, b.addFan(t, "test-u1", "p-1"), 1)

		links, err := b.db.RecordFanPendingID(t.Context(), "test-u1", "p-1")
		require.NoError(t, err)
		require.Empty(t, links)
		require.Equal(t, store.Counts{
			Fans: 1, FanPendingIDs: 1, Resolutions: 1, Links: 1, LinksActive: 1, Outbox: 1, OutboxUndelivered: 1, Jobs: 1,
		}, b.counts(t))
		require.Len(t, b.jobsWhat(t, JobNotification), 1)
	})

	open.test(t, "ExpiredResolutionNeverMatches", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a customer resolved more than 90 days ago is not linked.
		b.resolve(t, resolution("wwtestcorp", "wmtest1", "p-1"))
		b.clock.Advance(store.PendingIDLifetime)
		require.Empty(t, b.addFan(t, "test-u1", "p-1"))
		c := b.counts(t)
		require.Zero(t, c.Links)
		require.Zero(t, c.Outbox)
		require.Equal(t, store.ResolutionResolved, b.customer(t, "wwtestcorp", "wmtest1").Resolutions[0].State,
			"an expired resolution is not marked matched")
	})

	open.test(t, "OnlyLiveResolutionsMarkedMatched", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure that when the same person was resolved in two corps, 90 days
		// apart, only the live resolution links and is marked matched.
		b.resolve(t, resolution("wwtestcorp1", "wmtest1", "p-1"))
		b.clock.Advance(store.PendingIDLifetime)
		b.resolve(t, resolution("wwtestcorp2", "wmtest2", "p-1"))

		links := b.addFan(t, "test-u1", "p-1")
		require.Len(t, links, 1)
		require.Equal(t, "wwtestcorp2", links[0].CorpID)
		require.Equal(t, store.ResolutionMatched, b.customer(t, "wwtestcorp2", "wmtest2").Resolutions[0].State)
		require.Equal(t, store.ResolutionResolved, b.customer(t, "wwtestcorp1", "wmtest1").Resolutions[0].State,
			"the expired resolution links nothing, so it is not matched")
	})

	open.test(t, "ErrNotFoundForUnknownFan", Policy{PendingIDs: true}, func(t *testing.T, b *bundle) {
		_, err := b.db.RecordFanPendingID(t.Context(), "test-nobody", "p-1")
		require.ErrorIs(t, err, store.ErrNotFound)
		require.Equal(t, store.Counts{}, b.counts(t), "no pending_id, no job")
	})

	open.test(t, "ErrInvalidForEmptyPendingID", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "")
		_, err := b.db.RecordFanPendingID(t.Context(), "test-u1", "")
		require.ErrorIs(t, err, store.ErrInvalid)
		require.Zero(t, b.counts(t).FanPendingIDs)
	})

	open.test(t, "PolicyJobsCommitWithIt", Policy{PendingIDs: true}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "p-1")
		require.Equal(t, []Job{{What: JobPendingID, Subject: "test-u1"}}, Jobs(t, b.db))
	})

	open.test(t, "NoPolicyJobsNoJob", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "p-1")
		require.Zero(t, b.counts(t).Jobs)
	})
}

func (open exerciser) endLinks(t *testing.T) {
	open.test(t, "OtherStaffRemovalKeepsLink", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a removal between the customer and another staff member ends
		// nothing, and one with the staff member the link was made through does.
		l := b.link(t)
		ended, err := b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1", UserID: "other-staff"})
		require.NoError(t, err)
		require.Empty(t, ended)
		require.Equal(t, int64(1), b.counts(t).LinksActive)

		ended, err = b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1", UserID: "test-staff"})
		require.NoError(t, err)
		require.Len(t, ended, 1)
		require.Equal(t, l.ID, ended[0].ID)
		require.Zero(t, b.counts(t).LinksActive)
	})

	open.test(t, "MarksInactiveAndKeepsRow", Policy{}, func(t *testing.T, b *bundle) {
		l := b.link(t)
		endedAt := b.clock.Advance(time.Hour)
		ev := NewEvent(store.KindDelExternalContact)
		ev.ExternalUserID, ev.CreateTime = "wmtest1", endedAt
		_, err := b.db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)

		ended, err := b.db.EndLinks(t.Context(), store.EndLink{EventID: ev.ID, CorpID: "wwtestcorp", ExternalUserID: "wmtest1"})
		require.NoError(t, err)
		require.Len(t, ended, 1)
		require.Equal(t, l.ID, ended[0].ID)
		require.False(t, ended[0].Active)
		require.NotNil(t, ended[0].EndedAt)
		require.True(t, ended[0].EndedAt.Equal(endedAt))
		require.Equal(t, store.KindDelExternalContact, ended[0].EndReason)

		found, err := b.db.FindLinks(t.Context(), store.LinkFilter{UnionID: "test-u1"})
		require.NoError(t, err)
		require.Len(t, found, 1)
		require.False(t, found[0].Active)
		require.Equal(t, store.EventResolved, b.event(t, ev.ID).State)
		b.requireDelivers(t, l.ID, store.OutboxLinkCreated, store.OutboxLinkEnded)
	})

	open.test(t, "WithoutEventReasonIsRemoved", Policy{}, func(t *testing.T, b *bundle) {
		b.link(t)
		ended := b.end(t)
		require.Len(t, ended, 1)
		require.Equal(t, "removed", ended[0].EndReason)
	})

	open.test(t, "NotEndedTwice", Policy{Notify: true}, func(t *testing.T, b *bundle) {
		l := b.link(t)
		e := store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"}
		ended, err := b.db.EndLinks(t.Context(), e)
		require.NoError(t, err)
		require.Len(t, ended, 1)
		b.clock.Advance(time.Hour)
		ended, err = b.db.EndLinks(t.Context(), e)
		require.NoError(t, err)
		require.Empty(t, ended)
		require.Len(t, b.jobsWhat(t, JobNotification), 2)
		found, err := b.db.FindLinks(t.Context(), store.LinkFilter{})
		require.NoError(t, err)
		require.True(t, found[0].EndedAt.Equal(b.start), "the first end time stands")
		b.requireDelivers(t, l.ID, store.OutboxLinkCreated, store.OutboxLinkEnded)
	})

	open.test(t, "UnknownCustomerEndsNothing", Policy{}, func(t *testing.T, b *bundle) {
		b.link(t)
		ended, err := b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest-other"})
		require.NoError(t, err)
		require.Empty(t, ended)
		c := b.counts(t)
		require.Equal(t, int64(1), c.Outbox)
		require.Equal(t, int64(1), c.LinksActive)
	})

	open.test(t, "ReAddReactivates", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure a customer added again after a removal gets the same link back,
		// active, with a new link_created notification.
		l := b.link(t)
		b.end(t)
		readded := b.clock.Advance(time.Hour)

		r := resolution("wwtestcorp", "wmtest1", "p-1")
		r.UserID = "test-staff2"
		links := b.resolve(t, r)
		require.Len(t, links, 1)
		require.Equal(t, l.ID, links[0].ID)
		require.True(t, links[0].Active)
		require.Nil(t, links[0].EndedAt)
		require.Empty(t, links[0].EndReason)
		require.Equal(t, "test-staff2", links[0].UserID)
		require.True(t, links[0].MatchedAt.Equal(readded))
		require.Equal(t, int64(1), b.counts(t).Links)

		// And it can end again.
		ended := b.end(t)
		require.Len(t, ended, 1)
		b.requireDelivers(t, l.ID, store.OutboxLinkCreated, store.OutboxLinkEnded, store.OutboxLinkCreated, store.OutboxLinkEnded)
	})
}

func (open exerciser) linkExisting(t *testing.T) {
	open.test(t, "LinksReportedCustomersOnce", Policy{Notify: true}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "p-1")
		found := []store.CorpCustomer{{CorpID: "wwtestcorp1", ExternalUserID: "wmtest1"}, {CorpID: "wwtestcorp2", ExternalUserID: "wmtest2"}}
		links, err := b.db.LinkExisting(t.Context(), "test-u1", found)
		require.NoError(t, err)
		require.Len(t, links, 2)
		for i, l := range links {
			require.Equal(t, "test-u1", l.UnionID)
			require.Equal(t, "o-test-u1", l.OpenID)
			require.Equal(t, "p-1", l.PendingID)
			require.Equal(t, found[i].CorpID, l.CorpID)
			require.Equal(t, found[i].ExternalUserID, l.ExternalUserID)
			require.True(t, l.Active)
		}
		require.Len(t, b.jobsWhat(t, JobNotification), 2)

		links, err = b.db.LinkExisting(t.Context(), "test-u1", found)
		require.NoError(t, err)
		require.Empty(t, links)
		c := b.counts(t)
		require.Equal(t, int64(2), c.Links)
		require.Equal(t, int64(2), c.Outbox)
		require.Equal(t, int64(2), c.Jobs)
	})

	open.test(t, "FanWithoutLivePendingID", Policy{}, func(t *testing.T, b *bundle) {
		b.addFan(t, "test-u1", "p-1")
		b.clock.Advance(store.PendingIDLifetime)
		links, err := b.db.LinkExisting(t.Context(), "test-u1", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"}})
		require.NoError(t, err)
		require.Len(t, links, 1)
		require.Empty(t, links[0].PendingID)
	})

	open.test(t, "ErrNotFoundForUnknownFan", Policy{}, func(t *testing.T, b *bundle) {
		_, err := b.db.LinkExisting(t.Context(), "test-nobody", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"}})
		require.ErrorIs(t, err, store.ErrNotFound)
		require.Zero(t, b.counts(t).Links)
	})
}

func (open exerciser) outbox(t *testing.T) {
	// setupOutbox links a customer, ends the link an hour later and returns the link.
	setupOutbox := func(t *testing.T) (*bundle, store.Link) {
		t.Helper()
		b := open.setup(t, Policy{})
		l := b.link(t)
		b.clock.Advance(time.Hour)
		b.end(t)
		return b, l
	}
	// markHead marks the link's head with lastErr ("" delivered it) and
	// returns it and the head that follows.
	markHead := func(t *testing.T, b *bundle, linkID int64, lastErr string) (head, next *store.OutboxItem) {
		t.Helper()
		head = b.nextOutbox(t, linkID)
		require.NoError(t, b.db.MarkOutbox(t.Context(), head, lastErr))
		return head, b.nextOutbox(t, linkID)
	}

	t.Run("ClaimHoldsTheHeadForOneSender", func(t *testing.T) {
		t.Parallel()
		// Ensure a claimed head is nobody else's until marked or its lease
		// ends, and nothing behind it can be claimed meanwhile.
		b, l := setupOutbox(t)
		ctx := t.Context()
		first, err := b.db.ClaimOutbox(ctx, l.ID, time.Minute)
		require.NoError(t, err)
		require.Equal(t, store.OutboxLinkCreated, first.Kind)
		_, err = b.db.ClaimOutbox(ctx, l.ID, time.Minute)
		require.ErrorIs(t, err, store.ErrClaimed)

		b.clock.Advance(time.Minute)
		again, err := b.db.ClaimOutbox(ctx, l.ID, time.Minute)
		require.NoError(t, err, "the lease ended: the sender is presumed dead")
		require.Equal(t, first.ID, again.ID)

		// The first sender, presumed dead, was only slow: its failure must
		// not end the claim the second one now holds.
		require.NoError(t, b.db.MarkOutbox(ctx, first, "webhook: timeout"))
		_, err = b.db.ClaimOutbox(ctx, l.ID, time.Minute)
		require.ErrorIs(t, err, store.ErrClaimed, "the second sender still holds the head")

		require.NoError(t, b.db.MarkOutbox(ctx, again, "webhook: status 500"))
		retry, err := b.db.ClaimOutbox(ctx, l.ID, time.Minute)
		require.NoError(t, err, "a failed attempt frees the claim")
		require.Equal(t, first.ID, retry.ID)
		require.Equal(t, 1, retry.Attempts)

		require.NoError(t, b.db.MarkOutbox(ctx, retry, ""))
		next, err := b.db.ClaimOutbox(ctx, l.ID, time.Minute)
		require.NoError(t, err)
		require.Equal(t, store.OutboxLinkEnded, next.Kind)
		require.NoError(t, b.db.MarkOutbox(ctx, next, ""))
		_, err = b.db.ClaimOutbox(ctx, l.ID, time.Minute)
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("OldestFirstWithSnapshot", func(t *testing.T) {
		t.Parallel()
		b, l := setupOutbox(t)
		o := b.nextOutbox(t, l.ID)
		require.Equal(t, l.ID, o.LinkID)
		require.Equal(t, store.OutboxLinkCreated, o.Kind)
		require.Zero(t, o.Attempts)
		require.Empty(t, o.LastError)
		require.True(t, o.OccurredAt.Equal(b.start))
		require.Equal(t, l.ID, o.Link.ID)
		require.Equal(t, "test-u1", o.Link.UnionID)
		require.Equal(t, "wmtest1", o.Link.ExternalUserID)
		require.True(t, o.Link.Active, "the snapshot is the link as it was then")
	})

	t.Run("FailedAttemptKeepsHead", func(t *testing.T) {
		t.Parallel()
		b, l := setupOutbox(t)
		o, again := markHead(t, b, l.ID, "webhook: status 500")
		require.Equal(t, o.ID, again.ID)
		require.Equal(t, 1, again.Attempts)
		require.Equal(t, "webhook: status 500", again.LastError)
		require.Equal(t, int64(2), b.counts(t).OutboxUndelivered)
	})

	t.Run("DeliveredMovesToNext", func(t *testing.T) {
		t.Parallel()
		b, l := setupOutbox(t)
		first, second := markHead(t, b, l.ID, "")
		require.Greater(t, second.ID, first.ID)
		require.Equal(t, store.OutboxLinkEnded, second.Kind)
		require.True(t, second.OccurredAt.Equal(b.start.Add(time.Hour)))
		require.False(t, second.Link.Active)
		require.NotNil(t, second.Link.EndedAt)

		require.NoError(t, b.db.MarkOutbox(t.Context(), second, ""))
		_, err := b.db.NextOutbox(t.Context(), l.ID)
		require.ErrorIs(t, err, store.ErrNotFound)
		c := b.counts(t)
		require.Equal(t, int64(2), c.Outbox)
		require.Zero(t, c.OutboxUndelivered)
	})

	open.test(t, "ErrNotFoundForUnknownLink", Policy{}, func(t *testing.T, b *bundle) {
		_, err := b.db.NextOutbox(t.Context(), 12345)
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	open.test(t, "QueuesNotificationJobWithEachRow", Policy{Notify: true}, func(t *testing.T, b *bundle) {
		// Ensure, with a policy that notifies, every outbox row commits with
		// a notification job for its link.
		l := b.link(t)
		b.end(t)
		_, err := b.db.LinkExisting(t.Context(), "test-u1", []store.CorpCustomer{{CorpID: "wwtestcorp2", ExternalUserID: "wmtest2"}})
		require.NoError(t, err)

		require.Equal(t, int64(3), b.counts(t).Outbox)
		var got []string
		for _, j := range Jobs(t, b.db) {
			require.Equal(t, JobNotification, j.What)
			got = append(got, j.Subject)
		}
		first := strconv.FormatInt(l.ID, 10)
		require.Len(t, got, 3)
		require.Equal(t, first, got[0])
		require.Equal(t, first, got[1])
		require.NotEqual(t, first, got[2])
	})

	t.Run("NoNotificationJobsWithoutThem", func(t *testing.T) {
		t.Parallel()
		b, _ := setupOutbox(t)
		c := b.counts(t)
		require.Equal(t, int64(2), c.Outbox)
		require.Zero(t, c.Jobs)
	})
}

func (open exerciser) pipelineStatus(t *testing.T) {
	open.test(t, "Empty", Policy{}, func(t *testing.T, b *bundle) {
		st, err := b.db.PipelineStatus(t.Context(), 7*24*time.Hour)
		require.NoError(t, err)
		require.Equal(t, store.PipelineStatus{FailureReasons: map[string]int64{}}, st)
	})

	open.test(t, "Counts", Policy{}, func(t *testing.T, b *bundle) {
		// Events: one pending, one resolved, one unmatched, three failed (two reasons).
		b.saveEvent(t, store.KindAddExternalContact)
		settle := func(pendingID string, failed bool, reason string) {
			ev := b.saveEvent(t, store.KindAddExternalContact)
			r := resolution(ev.CorpID, ev.ExternalUserID, pendingID)
			r.EventID, r.Failed, r.Reason = ev.ID, failed, reason
			b.resolve(t, r)
		}
		settle("p-x", false, "")
		settle("", false, "no pending_id")
		settle("", true, "errcode 40096")
		settle("", true, "errcode 40096")
		settle("", true, "errcode 48002")

		// Fans: expired (registered at start), expiring (85 days ago), valid (now),
		// one never registered; one link ended, one active.
		b.addFan(t, "test-expired", "p-expired")
		b.clock.Advance(10 * 24 * time.Hour)
		b.addFan(t, "test-expiring", "p-expiring")
		b.clock.Advance(85 * 24 * time.Hour)
		b.addFan(t, "test-valid", "p-valid")
		b.addFan(t, "test-new", "")
		_, err := b.db.LinkExisting(t.Context(), "test-valid", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wm1"}, {CorpID: "wwtestcorp", ExternalUserID: "wm2"}})
		require.NoError(t, err)
		_, err = b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wm1"})
		require.NoError(t, err)

		st, err := b.db.PipelineStatus(t.Context(), 7*24*time.Hour)
		require.NoError(t, err)
		require.Equal(t, store.PipelineStatus{
			EventsResolved: 1, EventsPending: 1, EventsFailed: 3, EventsUnmatched: 1,
			FansRegistered: 3, FansValid: 2, FansExpiring: 1, FansExpired: 1,
			LinksTotal: 2, LinksActive: 1,
			FailureReasons: map[string]int64{"errcode 40096": 2, "errcode 48002": 1},
		}, st)
	})
}

func (open exerciser) tallies(t *testing.T) {
	open.test(t, "ExpiryWithinAnHour", Policy{}, func(t *testing.T, b *bundle) {
		// Both ids expire in the same hour, one before now and one after:
		// the part of an hour the kept counts cannot split is counted.
		b.clock.Advance(10 * time.Minute)
		b.addFan(t, "test-early", "p-early")
		b.clock.Advance(40 * time.Minute)
		b.addFan(t, "test-late", "p-late")
		b.clock.Advance(store.PendingIDLifetime - 20*time.Minute) // 20 min before p-late expires
		for _, c := range []struct {
			within                   time.Duration
			valid, expiring, expired int64
		}{
			{20 * time.Minute, 1, 1, 1},
			{20*time.Minute - time.Millisecond, 1, 0, 1},
			{7 * 24 * time.Hour, 1, 1, 1},
		} {
			st, err := b.db.PipelineStatus(t.Context(), c.within)
			require.NoError(t, err)
			require.Equal(t, [3]int64{c.valid, c.expiring, c.expired}, [3]int64{st.FansValid, st.FansExpiring, st.FansExpired}, "within %s", c.within)
			n, err := b.db.CountFansExpiring(t.Context(), c.within)
			require.NoError(t, err)
			require.Equal(t, c.expiring, n, "CountFansExpiring within %s", c.within)
		}
	})

	open.test(t, "ExpiringByPriority", Policy{}, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		for i, p := range []int{80, 80, 20, 50} {
			u := fmt.Sprintf("test-u%d", i)
			_, err := b.db.RegisterFans(ctx, []store.FanInput{{UnionID: u, OpenID: "o", Priority: p}}, store.RegisterOpts{NoJob: true})
			require.NoError(t, err)
			_, err = b.db.RecordFanPendingID(ctx, u, "p-"+u)
			require.NoError(t, err)
			if i == 2 {
				b.clock.Advance(30 * 24 * time.Hour) // test-u3 expires a month after the others
			}
		}
		b.clock.Advance(store.PendingIDLifetime - 30*24*time.Hour - 3*24*time.Hour) // the first three expire in 3 days
		got, err := b.db.ExpiringByPriority(ctx, 7*24*time.Hour)
		require.NoError(t, err)
		require.Equal(t, []store.QueuedCount{{Priority: 80, Class: store.QueueRenew, Count: 2}, {Priority: 20, Class: store.QueueRenew, Count: 1}}, got)

		// Overdue counts; a fan that failed does not (renewal skips it).
		b.clock.Advance(4 * 24 * time.Hour)
		got, err = b.db.ExpiringByPriority(ctx, 7*24*time.Hour)
		require.NoError(t, err)
		require.Equal(t, []store.QueuedCount{{Priority: 80, Class: store.QueueRenew, Count: 2}, {Priority: 20, Class: store.QueueRenew, Count: 1}}, got,
			"expired a day ago, not renewed yet")
		require.NoError(t, b.db.FailFan(ctx, "test-u1", "errcode 40003"))
		got, err = b.db.ExpiringByPriority(ctx, 7*24*time.Hour)
		require.NoError(t, err)
		require.Equal(t, []store.QueuedCount{{Priority: 80, Class: store.QueueRenew, Count: 1}, {Priority: 20, Class: store.QueueRenew, Count: 1}}, got)

		// A fan queued for renewal is in the queue's count, not this one.
		_, err = b.db.RegisterFans(ctx, []store.FanInput{{UnionID: "test-u0", OpenID: "o"}}, store.RegisterOpts{Priority: store.QueueRenew, Renew: true})
		require.NoError(t, err)
		got, err = b.db.ExpiringByPriority(ctx, 7*24*time.Hour)
		require.NoError(t, err)
		require.Equal(t, []store.QueuedCount{{Priority: 20, Class: store.QueueRenew, Count: 1}}, got)
	})

	open.test(t, "FollowEveryWrite", Policy{}, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		requireTrue := func(step string) {
			t.Helper()
			drift, err := b.db.CheckTallies(ctx)
			require.NoError(t, err)
			require.Empty(t, drift, "after %s", step)
		}
		requireTrue("opening")
		b.saveEvent(t, store.KindAddExternalContact)
		ev := b.saveEvent(t, store.KindAddExternalContact)
		b.resolve(t, store.Resolution{CorpID: ev.CorpID, ExternalUserID: ev.ExternalUserID, PendingID: "p-1", EventID: ev.ID})
		failed := b.saveEvent(t, store.KindAddExternalContact)
		require.NoError(t, b.db.UpdateEventState(ctx, failed.ID, store.EventFailed, "errcode 40096"))
		requireTrue("events")

		var fans []store.FanInput
		for i := range 20 {
			fans = append(fans, store.FanInput{UnionID: fmt.Sprintf("test-u%d", i), OpenID: "o", Priority: 10 + i%3*40})
		}
		_, err := b.db.RegisterFans(ctx, fans, store.RegisterOpts{})
		require.NoError(t, err)
		_, err = b.db.RegisterFans(ctx, fans[:2], store.RegisterOpts{Priority: store.QueueInteractive})
		require.NoError(t, err)
		requireTrue("queueing fans")
		_, err = b.db.RecordFanPendingID(ctx, "test-u1", "p-1") // links the customer above
		require.NoError(t, err)
		_, err = b.db.RecordFanPendingID(ctx, "test-u2", "p-2")
		require.NoError(t, err)
		require.NoError(t, b.db.RequeueFan(ctx, "test-u3", "errcode -1"))
		require.NoError(t, b.db.FailFan(ctx, "test-u4", "errcode 40003"))
		require.NoError(t, b.db.SetFanPriority(ctx, "test-u5", 99))
		requireTrue("registering")

		_, err = b.db.RecordCheck(ctx, "test-u2", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wm-old"}}, 0)
		require.NoError(t, err)
		_, err = b.db.EndLinks(ctx, store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wm-old"})
		require.NoError(t, err)
		requireTrue("links")

		// A renewal: the same fan, a later id.
		b.clock.Advance(store.PendingIDLifetime - time.Hour)
		_, err = b.db.RegisterFans(ctx, []store.FanInput{{UnionID: "test-u2", OpenID: "o"}}, store.RegisterOpts{Priority: store.QueueRenew, Renew: true})
		require.NoError(t, err)
		_, err = b.db.RecordFanPendingID(ctx, "test-u2", "p-2b")
		require.NoError(t, err)
		_, err = b.db.RetryFans(ctx, store.RetryFilter{})
		require.NoError(t, err)
		_, err = b.db.PruneEvents(ctx, b.clock.Now())
		require.NoError(t, err)
		requireTrue("renewing, retrying and pruning")

		st, err := b.db.PipelineStatus(ctx, 7*24*time.Hour)
		require.NoError(t, err)
		require.Equal(t, int64(2), st.FansRegistered)
		require.Equal(t, int64(2), st.FansValid, "test-u2 renewed, test-u1 in its last hour")
		require.Equal(t, int64(1), st.FansExpiring)
		require.Equal(t, int64(2), st.LinksTotal)
		require.Equal(t, int64(1), st.LinksActive)
		require.Equal(t, int64(18), st.FansQueued, "20 queued, 2 registered, the failed one retried")
	})
}
