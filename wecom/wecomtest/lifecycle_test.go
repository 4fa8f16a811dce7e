package wecomtest_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

func TestServer_TransferCustomer(t *testing.T) {
	t.Parallel()

	t.Run("MovesTheFollowAndReturnsTheTransferDelete", func(t *testing.T) {
		t.Parallel()
		b, d, p, c := setupAliceFollows(t)
		b.clock.Advance(42 * time.Second)

		moved, ev := b.srv.TransferCustomer(c, "bob")
		require.Equal(t, "bob", moved.Staff)
		require.Equal(t, c.ExternalUserID, moved.ExternalUserID, "the external_userid is per dealer, not per staff")
		require.Equal(t, d.CorpID, moved.Dealer.CorpID)
		require.Equal(t, p, moved.Person)
		require.Equal(t, []string{"bob"}, b.srv.Follows(d, p))

		requireEvent(t, wecom.KindDelExternalContact, wecom.Event{
			ToUserName: d.CorpID, FromUserName: "sys", CreateTime: t0.Add(42 * time.Second).Unix(), MsgType: "event",
			Event: wecom.EventChangeExternalContact, ChangeType: wecom.ChangeDelExternalContact,
			UserID: "alice", ExternalUserID: c.ExternalUserID, Source: wecom.SourceDeleteByTransfer,
		}, ev)
	})

	t.Run("StillACustomerForLookups", func(t *testing.T) {
		t.Parallel()
		s := setupScene(t)
		pid := mustRegister(t, s.srv, s.tok, s.p)
		s.d = s.srv.AddDealer("B", "alice", "bob")
		c := s.srv.AddCustomer(s.d, s.p, "alice")
		s.srv.TransferCustomer(c, "bob")
		require.Equal(t, map[string]string{c.ExternalUserID: pid}, mustBatch(t, s.srv, s.tok, "", c.ExternalUserID))
	})

	t.Run("ToAColleagueWhoAlreadyFollows", func(t *testing.T) {
		t.Parallel()
		b, d, p, c := setupAliceFollows(t)
		b.srv.AddCustomer(d, p, "bob")
		b.srv.TransferCustomer(c, "bob")
		require.Equal(t, []string{"bob"}, b.srv.Follows(d, p))
	})

	for _, tc := range []struct {
		name, to string
		remove   bool
		want     string
	}{
		{"UnknownStaffPanics", "nobody", false, `wecomtest: TransferCustomer: "nobody" is not a staff member of dealer %s`},
		{"ToTheSameStaffPanics", "alice", false, `wecomtest: TransferCustomer: "alice" already follows customer %s`},
		{"EndedFollowPanics", "bob", true, `wecomtest: TransferCustomer: "alice" does not follow customer %s`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := wecomtest.NewUnstartedServer()
			d := srv.AddDealer("A", "alice", "bob")
			c := srv.AddCustomer(d, srv.AddPerson(), "alice")
			if tc.remove {
				srv.RemoveCustomer(c)
			}
			want := fmt.Sprintf(tc.want, c.ExternalUserID)
			if strings.Contains(tc.want, "dealer") {
				want = fmt.Sprintf(tc.want, d.CorpID)
			}
			require.PanicsWithValue(t, want, func() { srv.TransferCustomer(c, tc.to) })
		})
	}
}

func TestServer_TransferFailEvent(t *testing.T) {
	t.Parallel()

	t.Run("NamesTheTakerAndReasonAndChangesNothing", func(t *testing.T) {
		t.Parallel()
		b, d, p, c := setupAliceFollows(t)

		ev := b.srv.TransferFailEvent(c, "bob", "customer_refused")
		requireEvent(t, wecom.KindTransferFail, wecom.Event{
			ToUserName: d.CorpID, FromUserName: "sys", CreateTime: t0.Unix(), MsgType: "event",
			Event: wecom.EventChangeExternalContact, ChangeType: wecom.ChangeTransferFail,
			UserID: "bob", ExternalUserID: c.ExternalUserID, FailReason: "customer_refused",
		}, ev)
		require.Equal(t, []string{"alice"}, b.srv.Follows(d, p))
	})

	t.Run("UnknownStaffPanics", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewUnstartedServer()
		d := srv.AddDealer("A", "alice")
		c := srv.AddCustomer(d, srv.AddPerson(), "alice")
		require.PanicsWithValue(t, fmt.Sprintf(`wecomtest: TransferFailEvent: "nobody" is not a staff member of dealer %s`, d.CorpID),
			func() { srv.TransferFailEvent(c, "nobody", "customer_refused") })
	})
}

// Ensure ContactEvent serves removals: the world changes through
// RemoveCustomer, the event only describes it.
func TestServer_RemovalEvents(t *testing.T) {
	t.Parallel()
	for _, changeType := range []string{wecom.ChangeDelExternalContact, wecom.ChangeDelFollowUser} {
		t.Run(changeType, func(t *testing.T) {
			t.Parallel()
			s := setupScene(t)
			mustRegister(t, s.srv, s.tok, s.p)
			s.srv.RemoveCustomer(s.c)
			ev := s.srv.ContactEvent(s.c, changeType)

			require.Equal(t, changeType, ev.Kind())
			require.Equal(t, s.c.Staff, ev.UserID)
			require.Equal(t, s.c.ExternalUserID, ev.ExternalUserID)
			require.Empty(t, ev.Source, "not a transfer")
			require.Empty(t, s.srv.Follows(s.d, s.p))
			require.Empty(t, mustBatch(t, s.srv, s.tok, "", s.c.ExternalUserID))
		})
	}
}

func TestServer_Follows(t *testing.T) {
	t.Parallel()

	t.Run("SortedCurrentFollowersOfOneDealer", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d1, d2 := b.srv.AddDealer("A", "carol", "alice", "bob"), b.srv.AddDealer("B", "dave")
		p := b.srv.AddPerson()
		require.Empty(t, b.srv.Follows(d1, p))
		b.srv.AddCustomer(d1, p, "carol")
		c := b.srv.AddCustomer(d1, p, "bob")
		b.srv.AddCustomer(d1, p, "alice")
		b.srv.AddCustomer(d2, p, "dave")
		b.srv.RemoveCustomer(c)
		require.Equal(t, []string{"alice", "carol"}, b.srv.Follows(d1, p))
		require.Equal(t, []string{"dave"}, b.srv.Follows(d2, p))
	})
}

func TestServer_ChatLifecycle(t *testing.T) {
	t.Parallel()

	t.Run("CreateEventCarriesOnlyTheChatID", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A")
		chat := b.srv.AddGroupChat(d, d.Staff[0], b.srv.AddPerson())
		ev := b.srv.CreateChatEvent(chat)
		requireEvent(t, wecom.KindChatCreate, wecom.Event{
			ToUserName: d.CorpID, FromUserName: "sys", CreateTime: t0.Unix(), MsgType: "event",
			Event: wecom.EventChangeExternalChat, ChatID: chat.ID, ChangeType: wecom.ChatChangeCreate,
		}, ev)
	})

	t.Run("ChatMembersSortedByUnionID", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A")
		p, q, r := b.srv.AddPerson(), b.srv.AddPerson(), b.srv.AddPerson()
		chat := b.srv.AddGroupChat(d, d.Staff[0], r, p)
		b.srv.AddChatMembers(chat, q)
		b.srv.RemoveChatMembers(chat, r)
		want := []wecomtest.Person{p, q}
		slices.SortFunc(want, func(a, b wecomtest.Person) int { return strings.Compare(a.UnionID, b.UnionID) })
		require.Equal(t, want, b.srv.ChatMembers(chat))
	})

	t.Run("DismissEmptiesTheChatAndLookupsAnswer40050", func(t *testing.T) {
		t.Parallel()
		s := setupScene(t)
		mustRegister(t, s.srv, s.tok, s.p)
		chat := s.srv.AddGroupChat(s.d, s.d.Staff[0], s.p)
		s.clock.Advance(time.Minute)

		ev := s.srv.DismissChat(chat)
		requireEvent(t, wecom.KindChatDismiss, wecom.Event{
			ToUserName: s.d.CorpID, FromUserName: "sys", CreateTime: t0.Add(time.Minute).Unix(), MsgType: "event",
			Event: wecom.EventChangeExternalChat, ChatID: chat.ID, ChangeType: wecom.ChatChangeDismiss,
		}, ev)

		require.Empty(t, s.srv.ChatMembers(chat))
		require.Equal(t, 40050, batch(t, s.srv, s.tok, chat.ID, s.c.ExternalUserID).Errcode)
		require.Equal(t, 40050, groupChat(t, s.srv, s.tok, chat.ID).Errcode)
		pid, _ := s.srv.PendingIDOf(s.p)
		require.Equal(t, map[string]string{s.c.ExternalUserID: pid}, mustBatch(t, s.srv, s.tok, "", s.c.ExternalUserID),
			"the follow is not the chat's")
	})

	t.Run("CreateAndDismissKeysDiffer", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A")
		chat := b.srv.AddGroupChat(d, d.Staff[0])
		create, dismiss := b.srv.CreateChatEvent(chat), b.srv.DismissChat(chat)
		require.Equal(t, create.CreateTime, dismiss.CreateTime, "same second")
		require.NotEqual(t, create.DedupKey(nil), dismiss.DedupKey(nil))
	})

	for _, tc := range []struct {
		name string
		f    func(srv *wecomtest.Server, chat wecomtest.Chat, p wecomtest.Person)
	}{
		{"AddMembersPanics", func(srv *wecomtest.Server, chat wecomtest.Chat, p wecomtest.Person) { srv.AddChatMembers(chat, p) }},
		{"RemoveMembersPanics", func(srv *wecomtest.Server, chat wecomtest.Chat, p wecomtest.Person) { srv.RemoveChatMembers(chat, p) }},
		{"DismissAgainPanics", func(srv *wecomtest.Server, chat wecomtest.Chat, _ wecomtest.Person) { srv.DismissChat(chat) }},
	} {
		t.Run("AfterDismiss"+tc.name, func(t *testing.T) {
			t.Parallel()
			srv := wecomtest.NewUnstartedServer()
			d := srv.AddDealer("A")
			p := srv.AddPerson()
			chat := srv.AddGroupChat(d, d.Staff[0], p)
			srv.DismissChat(chat)
			require.PanicsWithValue(t, "wecomtest: chat "+chat.ID+" is dismissed", func() { tc.f(srv, chat, p) })
		})
	}

	t.Run("UnknownChatPanics", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewUnstartedServer()
		unknown := wecomtest.Chat{ID: "wrtest-nosuch"}
		for name, f := range map[string]func(){
			"CreateChatEvent": func() { srv.CreateChatEvent(unknown) },
			"DismissChat":     func() { srv.DismissChat(unknown) },
			"ChatMembers":     func() { srv.ChatMembers(unknown) },
		} {
			require.PanicsWithValue(t, "wecomtest: unknown chat wrtest-nosuch", f, name)
		}
	})
}

// setupAliceFollows is dealer A with staff alice and bob, and a person who is
// alice's customer.
func setupAliceFollows(t *testing.T) (testBundle, wecomtest.Dealer, wecomtest.Person, wecomtest.Customer) {
	t.Helper()
	b := setup(t)
	d := b.srv.AddDealer("A", "alice", "bob")
	p := b.srv.AddPerson()
	return b, d, p, b.srv.AddCustomer(d, p, "alice")
}

// requireEvent checks a generated event field by field, its kind, and that it
// survives the wire.
func requireEvent(t *testing.T, kind string, want, ev wecom.Event) {
	t.Helper()
	require.Equal(t, want, ev)
	require.Equal(t, kind, ev.Kind())
	requireRoundTrips(t, ev)
}
