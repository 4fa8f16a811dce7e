package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
)

// world drives a store the way the pipeline does: events are saved, then
// their jobs (RecordResolution for adds, EndLinks for removals) run in
// whatever order the test picks. Fan test-u1 holds pending_id p-1;
// customer wwtestcorp/wmtest1 resolves to it.
type world struct{ b *bundle }

func (w *world) event(t *testing.T, kind string, at time.Time, set func(ev *store.Event)) *store.Event {
	t.Helper()
	ev := NewEvent(kind)
	ev.ExternalUserID, ev.CreateTime = "wmtest1", at
	switch kind {
	case store.KindAddMember, store.KindDelMember, store.KindChatDismiss, store.KindChatCreate:
		ev.ExternalUserID, ev.ChatID, ev.Members = "", "wrtestchat1", []string{"wmtest1"}
		if kind == store.KindChatDismiss || kind == store.KindChatCreate {
			ev.Members = nil
		}
	}
	if set != nil {
		set(ev)
	}
	inserted, err := w.b.db.SaveEvent(t.Context(), ev)
	require.NoError(t, err)
	require.True(t, inserted)
	return ev
}

// add saves an add of wmtest1 by staff at the given time.
func (w *world) add(t *testing.T, staff string, at time.Time) *store.Event {
	t.Helper()
	return w.event(t, store.KindAddExternalContact, at, func(ev *store.Event) { ev.UserID = staff })
}

// remove saves a removal of kind by staff.
func (w *world) remove(t *testing.T, kind, staff string, at time.Time) *store.Event {
	t.Helper()
	return w.event(t, kind, at, func(ev *store.Event) { ev.UserID = staff })
}

// resolve runs the add's resolve job: WeCom answered p-1.
func (w *world) resolve(t *testing.T, add *store.Event) []store.Link {
	t.Helper()
	r := store.Resolution{CorpID: add.CorpID, ExternalUserID: "wmtest1", UserID: add.UserID, ChatID: add.ChatID,
		PendingID: "p-1", EventID: add.ID}
	return w.b.resolve(t, r)
}

// end runs a removal's end_link job.
func (w *world) end(t *testing.T, del *store.Event) []store.Link {
	t.Helper()
	ended, err := w.b.db.EndLinks(t.Context(), store.EndLink{EventID: del.ID, CorpID: del.CorpID})
	require.NoError(t, err)
	return ended
}

// links returns the links of wmtest1.
func (w *world) links(t *testing.T) []store.Link {
	t.Helper()
	l, err := w.b.db.FindLinks(t.Context(), store.LinkFilter{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"})
	require.NoError(t, err)
	return l
}

func (open exerciser) follows(t *testing.T) {
	test := func(name string, f func(t *testing.T, b *bundle, w *world, t0 time.Time)) {
		open.test(t, name, Policy{}, func(t *testing.T, b *bundle) {
			b.addFan(t, "test-u1", "p-1")
			f(t, b, &world{b: b}, b.clock.Now().Truncate(time.Second))
		})
	}

	test("LastOfTwoStaffEndsLink", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure a customer followed by two staff members stays linked when
		// one removes it, and the link ends, with the reason, when the last does.
		addA, addB := w.add(t, "staff-a", t0), w.add(t, "staff-b", t0.Add(time.Second))
		require.Len(t, w.resolve(t, addA), 1)
		require.Empty(t, w.resolve(t, addB), "already linked")
		require.Empty(t, w.end(t, w.remove(t, store.KindDelFollowUser, "staff-a", t0.Add(2*time.Second))))
		require.True(t, w.links(t)[0].Active)
		ended := w.end(t, w.remove(t, store.KindDelExternalContact, "staff-b", t0.Add(3*time.Second)))
		require.Len(t, ended, 1)
		require.Equal(t, store.KindDelExternalContact, ended[0].EndReason)
	})

	test("TransferKeepsLinkUntilTheColleagueRemoves", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure 在职继承 (del_external_contact with DELETE_BY_TRANSFER) keeps the
		// link, and the colleague who took the customer over, whose add WeCom
		// never sent, ends it by removing the customer.
		require.Len(t, w.resolve(t, w.add(t, "staff-a", t0)), 1)
		moved := w.event(t, store.KindDelExternalContact, t0.Add(time.Second), func(ev *store.Event) {
			ev.UserID, ev.Source = "staff-a", store.SourceDeleteByTransfer
		})
		require.Empty(t, w.end(t, moved))
		require.True(t, w.links(t)[0].Active)
		require.Len(t, w.end(t, w.remove(t, store.KindDelFollowUser, "staff-b", t0.Add(2*time.Second))), 1)
	})

	test("TransferredThenAddedByColleagueEndsWithColleague", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure that when WeCom does send the colleague's add after a
		// transfer, the colleague's removal still ends the link.
		require.Len(t, w.resolve(t, w.add(t, "staff-a", t0)), 1)
		w.end(t, w.event(t, store.KindDelExternalContact, t0.Add(time.Second), func(ev *store.Event) {
			ev.UserID, ev.Source = "staff-a", store.SourceDeleteByTransfer
		}))
		require.Empty(t, w.resolve(t, w.add(t, "staff-b", t0.Add(2*time.Second))))
		require.Len(t, w.end(t, w.remove(t, store.KindDelExternalContact, "staff-b", t0.Add(3*time.Second))), 1)
	})

	transfer := func(t *testing.T, w *world, at time.Time) {
		t.Helper()
		w.end(t, w.event(t, store.KindDelExternalContact, at, func(ev *store.Event) {
			ev.UserID, ev.Source = "staff-a", store.SourceDeleteByTransfer
		}))
	}

	test("ColleagueAddedJustBeforeTheTransferEndsTheLink", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure the colleague whose add comes just before the transfer (in
		// WeCom's time, or in the same second and stored first) is the
		// heir: their removal ends the link, no unnamed hold outlives it.
		require.Len(t, w.resolve(t, w.add(t, "staff-a", t0)), 1)
		w.resolve(t, w.add(t, "staff-b", t0.Add(time.Second)))
		transfer(t, w, t0.Add(2*time.Second))
		require.True(t, w.links(t)[0].Active)
		require.Len(t, w.end(t, w.remove(t, store.KindDelExternalContact, "staff-b", t0.Add(3*time.Second))), 1)
	})

	test("ColleagueAddedInTheTransfersSecondEndsTheLink", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		require.Len(t, w.resolve(t, w.add(t, "staff-a", t0)), 1)
		w.resolve(t, w.add(t, "staff-b", t0.Add(time.Second)))
		transfer(t, w, t0.Add(time.Second))
		require.Len(t, w.end(t, w.remove(t, store.KindDelExternalContact, "staff-b", t0.Add(3*time.Second))), 1)
	})

	test("ColleagueAddedAfterTheTransferButStoredBeforeEndsTheLink", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		require.Len(t, w.resolve(t, w.add(t, "staff-a", t0)), 1)
		w.resolve(t, w.add(t, "staff-b", t0.Add(2*time.Second)))
		transfer(t, w, t0.Add(time.Second)) // delivered late
		require.Len(t, w.end(t, w.remove(t, store.KindDelExternalContact, "staff-b", t0.Add(3*time.Second))), 1)
	})

	test("ColleagueAddedBeforeTheTransferButStoredAfterEndsTheLink", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		require.Len(t, w.resolve(t, w.add(t, "staff-a", t0)), 1)
		transfer(t, w, t0.Add(2*time.Second))
		w.resolve(t, w.add(t, "staff-b", t0.Add(time.Second))) // delivered late
		require.Len(t, w.end(t, w.remove(t, store.KindDelExternalContact, "staff-b", t0.Add(3*time.Second))), 1)
	})

	test("FollowerOfLongBeforeTheTransferIsNotTheHeir", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure a member who followed the customer long before the transfer
		// does not take the heir's place: their removal leaves the link to
		// the colleague the transfer named nobody for.
		require.Len(t, w.resolve(t, w.add(t, "staff-a", t0)), 1)
		w.resolve(t, w.add(t, "staff-b", t0.Add(time.Second)))
		transfer(t, w, t0.Add(time.Hour))
		require.Empty(t, w.end(t, w.remove(t, store.KindDelExternalContact, "staff-b", t0.Add(time.Hour+time.Second))))
		require.True(t, w.links(t)[0].Active)
	})

	test("AChatMemberThatFailedKeepsItsEventRetryable", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure a member whose lookup failed for good leaves its chat
		// event failed, with the reason, whichever member settles first, so
		// that retrying that reason re-drives it.
		for i, order := range [][]string{{"wmtest1", "wmtest2"}, {"wmtest2", "wmtest1"}} {
			join := w.event(t, store.KindAddMember, t0.Add(time.Duration(i)*time.Second), func(ev *store.Event) { ev.Members = []string{"wmtest1", "wmtest2"} })
			for _, m := range order {
				r := store.Resolution{CorpID: join.CorpID, ExternalUserID: m, ChatID: join.ChatID, EventID: join.ID, PendingID: "p-2"}
				if m == "wmtest1" {
					r.PendingID, r.Failed, r.Reason = "", true, "wecom: errcode 50002"
				}
				b.resolve(t, r)
			}
			ev := b.event(t, join.ID)
			require.Equal(t, store.EventFailed, ev.State, "order %v", order)
			require.Contains(t, ev.Reason, "50002")
		}
		n, err := b.db.RetryEvents(t.Context(), store.RetryFilter{Reason: "50002", DryRun: true})
		require.NoError(t, err)
		require.EqualValues(t, 2, n)
	})

	test("NoJoinOlderThanItsChatsDismissalHoldsTheCustomer", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure WeCom's late retry of a join older than the chat's
		// dismissal makes nobody a member again: the staff member's removal
		// then ends the link.
		require.Len(t, w.resolve(t, w.add(t, "staff-a", t0)), 1)
		w.end(t, w.event(t, store.KindChatDismiss, t0.Add(3*time.Second), nil))
		w.resolve(t, w.event(t, store.KindAddMember, t0.Add(2*time.Second), nil))
		require.Len(t, w.end(t, w.remove(t, store.KindDelExternalContact, "staff-a", t0.Add(4*time.Second))), 1)
	})

	test("ChatMembersReadBeforeTheDismissalHoldNobody", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure the members groupchat/get answered, recorded only after
		// the chat's dismissal was settled, hold nobody.
		created := w.event(t, store.KindChatCreate, t0, nil)
		w.end(t, w.event(t, store.KindChatDismiss, t0.Add(time.Second), nil))
		require.NoError(t, b.db.RecordChatMembers(t.Context(), created.ID, []string{"wmtest1"}))
		w.resolve(t, created)
		links := w.links(t)
		require.Len(t, links, 1)
		require.False(t, links[0].Active, "the chat was gone before its members were recorded")
	})

	test("EditAndTransferFailEndNothing", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		require.Len(t, w.resolve(t, w.add(t, "staff-a", t0)), 1)
		w.remove(t, store.KindEditExternalContact, "staff-a", t0.Add(time.Second))
		w.remove(t, store.KindTransferFail, "staff-b", t0.Add(2*time.Second))
		require.Empty(t, w.end(t, w.remove(t, store.KindDelFollowUser, "staff-c", t0.Add(3*time.Second))),
			"a member who never held the customer removes nothing")
		require.True(t, w.links(t)[0].Active)
	})

	test("RemovalOvertakingLookupCreatesEndedLinkSilently", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure a removal processed before its add's lookup finishes leaves
		// the link ended from the start, with no notification at all.
		add := w.add(t, "staff-a", t0)
		require.Empty(t, w.end(t, w.remove(t, store.KindDelFollowUser, "staff-a", t0.Add(time.Second))))
		require.Empty(t, w.resolve(t, add))
		links := w.links(t)
		require.Len(t, links, 1)
		require.False(t, links[0].Active)
		require.Equal(t, store.KindDelFollowUser, links[0].EndReason)
		require.Zero(t, b.counts(t).Outbox, "the brand never hears of a link that is already over")
	})

	test("EventsApplyInCreateTimeOrder", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure a removal that arrives before its (older) add wins, and a
		// later re-add wins over both.
		del := w.remove(t, store.KindDelExternalContact, "staff-a", t0.Add(time.Second))
		add := w.add(t, "staff-a", t0)
		require.Empty(t, w.end(t, del))
		require.Empty(t, w.resolve(t, add))
		require.False(t, w.links(t)[0].Active)

		readd := w.add(t, "staff-a", t0.Add(2*time.Second))
		links := w.resolve(t, readd)
		require.Len(t, links, 1)
		require.True(t, links[0].Active)
		require.Equal(t, []string{store.OutboxLinkCreated}, b.outboxKinds(t, links[0].ID))
	})

	test("SameSecondFollowsArrivalOrder", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		add := w.add(t, "staff-a", t0)
		del := w.remove(t, store.KindDelFollowUser, "staff-a", t0)
		w.end(t, del)
		require.Empty(t, w.resolve(t, add), "the removal came second")
	})

	test("DelMemberEndsLinksHeldOnlyThroughTheChat", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		join := w.event(t, store.KindAddMember, t0, nil)
		require.Len(t, w.resolve(t, join), 1)
		staff := w.add(t, "staff-a", t0.Add(time.Second))
		w.resolve(t, staff)
		require.Empty(t, w.end(t, w.event(t, store.KindDelMember, t0.Add(2*time.Second), nil)), "staff-a still follows")
		require.Len(t, w.end(t, w.remove(t, store.KindDelFollowUser, "staff-a", t0.Add(3*time.Second))), 1)
	})

	test("DelMemberEndsChatLink", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		require.Len(t, w.resolve(t, w.event(t, store.KindAddMember, t0, nil)), 1)
		ended := w.end(t, w.event(t, store.KindDelMember, t0.Add(time.Second), nil))
		require.Len(t, ended, 1)
		require.Equal(t, store.KindDelMember, ended[0].EndReason)
	})

	test("DismissEndsEveryChatLink", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		require.Len(t, w.resolve(t, w.event(t, store.KindAddMember, t0, nil)), 1)
		ended := w.end(t, w.event(t, store.KindChatDismiss, t0.Add(time.Second), nil))
		require.Len(t, ended, 1)
		require.Equal(t, store.KindChatDismiss, ended[0].EndReason)
	})

	test("ChatCreationMembersAreHeldAndResolved", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure the members a chat had when it was created (found by a
		// lookup after the create event) get resolve jobs and count as
		// members from the event's time.
		created := w.event(t, store.KindChatCreate, t0, nil)
		require.Equal(t, store.EventRecorded, created.State, "the test policy has no job for a creation")
		require.NoError(t, b.db.RecordChatMembers(t.Context(), created.ID, []string{"wmtest1"}))
		require.Equal(t, []Job{{What: JobEvent, EventID: created.ID, Subject: "wmtest1"}}, b.jobsWhat(t, JobEvent))
		links := w.resolve(t, created)
		require.Len(t, links, 1)
		require.Equal(t, "wrtestchat1", links[0].ChatID)
		require.Len(t, w.end(t, w.event(t, store.KindDelMember, t0.Add(time.Second), nil)), 1)
	})

	test("ChatCreationWithoutMembersResolvesTheEvent", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		created := w.event(t, store.KindChatCreate, t0, nil)
		require.NoError(t, b.db.RecordChatMembers(t.Context(), created.ID, nil))
		require.Equal(t, store.EventResolved, b.event(t, created.ID).State)
		require.ErrorIs(t, b.db.RecordChatMembers(t.Context(), 999, nil), store.ErrNotFound)
	})

	test("DismissWithoutCreateTimeKeepsItsReceivedTime", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure a dismissal with no CreateTime, applied again later (by its
		// end_link job), does not end a membership that began after it.
		dismiss := w.event(t, store.KindChatDismiss, time.Time{}, nil)
		b.clock.Advance(time.Minute)
		join := w.event(t, store.KindAddMember, time.Time{}, nil)
		require.Len(t, w.resolve(t, join), 1)
		b.clock.Advance(time.Minute)
		require.Empty(t, w.end(t, dismiss), "the member joined after the chat's dismissal was received")
		require.True(t, w.links(t)[0].Active)
	})

	test("ExistingCustomerHeldUntilAStaffMemberRemovesIt", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure a customer found by unionid_to_external_userid (no add
		// seen) is linked, and a removal by any member ends it.
		links, err := b.db.LinkExisting(t.Context(), "test-u1", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"}})
		require.NoError(t, err)
		require.Len(t, links, 1)
		b.clock.Advance(time.Minute)
		require.Len(t, w.end(t, w.remove(t, store.KindDelFollowUser, "staff-x", b.clock.Now())), 1)
	})

	test("LateAddExplainsTheExistingHold", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure that when the add behind a customer found by
		// unionid_to_external_userid arrives after the check, its staff
		// member takes the unnamed hold over: their removal ends the link.
		b.clock.Set(t0.Add(time.Minute))
		links, err := b.db.LinkExisting(t.Context(), "test-u1", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"}})
		require.NoError(t, err)
		require.Len(t, links, 1)
		w.resolve(t, w.add(t, "staff-a", t0)) // made before the check, delivered after it
		ended := w.end(t, w.remove(t, store.KindDelFollowUser, "staff-a", t0.Add(2*time.Minute)))
		require.Len(t, ended, 1, "nobody holds the customer any more")
	})

	test("NewerAddDoesNotExplainTheExistingHold", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure an add made after the check is another holder: its removal
		// leaves the customer held by whoever the check found.
		_, err := b.db.LinkExisting(t.Context(), "test-u1", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"}})
		require.NoError(t, err)
		w.resolve(t, w.add(t, "staff-b", t0.Add(time.Minute)))
		require.Empty(t, w.end(t, w.remove(t, store.KindDelFollowUser, "staff-b", t0.Add(2*time.Minute))))
	})

	test("ExistingCustomerKeepsKnownHolders", func(t *testing.T, b *bundle, w *world, t0 time.Time) {
		// Ensure a customer whose holders are known is not given an unnamed
		// one: when the known one removes it, the link ends.
		w.resolve(t, w.add(t, "staff-a", t0))
		_, err := b.db.LinkExisting(t.Context(), "test-u1", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"}})
		require.NoError(t, err)
		b.clock.Advance(time.Minute)
		require.Len(t, w.end(t, w.remove(t, store.KindDelFollowUser, "staff-a", b.clock.Now())), 1)
	})
}

// outboxKinds lists the undelivered notification kinds of a link, in order,
// marking them delivered.
func (b *bundle) outboxKinds(t *testing.T, linkID int64) []string {
	t.Helper()
	var kinds []string
	for {
		o, err := b.db.NextOutbox(t.Context(), linkID)
		if err != nil {
			require.ErrorIs(t, err, store.ErrNotFound)
			return kinds
		}
		kinds = append(kinds, o.Kind)
		require.NoError(t, b.db.MarkOutbox(t.Context(), o, ""))
	}
}
