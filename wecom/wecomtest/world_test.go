package wecomtest_test

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

func TestServer_World(t *testing.T) {
	t.Parallel()

	t.Run("IDsLookFake", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("Dealer A")
		p := b.srv.AddPerson()
		c := b.srv.AddCustomer(d, p, d.Staff[0])
		ch := b.srv.AddGroupChat(d, d.Staff[0])
		for prefix, id := range map[string]string{
			"wwtest": d.CorpID, "test-u": p.UnionID, "test-o": p.OpenID, "wmtest": c.ExternalUserID, "wrtest": ch.ID,
		} {
			require.True(t, strings.HasPrefix(id, prefix), "%s should start with %s", id, prefix)
		}
		require.Equal(t, []string{"test-staff-1"}, d.Staff)
		require.Equal(t, "Dealer A", d.Name)
	})

	t.Run("DealersAreDistinct", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d1, d2 := b.srv.AddDealer("A", "alice"), b.srv.AddDealer("B", "bob", "carol")
		require.NotEqual(t, d1.CorpID, d2.CorpID)
		require.NotEqual(t, d1.AgentID, d2.AgentID)
		require.NotEqual(t, b.srv.CorpID, d1.CorpID)
		require.Equal(t, []string{"bob", "carol"}, d2.Staff)
	})

	t.Run("ReturnedStaffIsACopy", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A", "alice")
		d.Staff[0] = "mallory"
		require.Panics(t, func() { b.srv.AddCustomer(d, b.srv.AddPerson(), "mallory") })
		require.NotPanics(t, func() { b.srv.AddCustomer(d, b.srv.AddPerson(), "alice") })
	})

	t.Run("ExternalUserIDStablePerDealerAndPerson", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d1, d2 := b.srv.AddDealer("A", "alice", "bob"), b.srv.AddDealer("B")
		p, q := b.srv.AddPerson(), b.srv.AddPerson()
		id := b.srv.ExternalUserID(d1, p)
		require.Equal(t, id, b.srv.AddCustomer(d1, p, "alice").ExternalUserID)
		require.Equal(t, id, b.srv.AddCustomer(d1, p, "bob").ExternalUserID)
		require.Equal(t, id, b.srv.ExternalUserID(d1, p))
		require.NotEqual(t, id, b.srv.ExternalUserID(d2, p))
		require.NotEqual(t, id, b.srv.ExternalUserID(d1, q))
	})

	t.Run("ExternalUserIDAloneMakesNoCustomer", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		d := b.srv.AddDealer("A")
		p := b.srv.AddPerson()
		mustRegister(t, b.srv, tok, p)
		require.Empty(t, mustBatch(t, b.srv, tok, "", b.srv.ExternalUserID(d, p)))
	})

	for _, tc := range []struct {
		name string
		f    func(t *testing.T, srv, other *wecomtest.Server)
	}{
		{"AddCustomerUnknownStaffPanics", func(t *testing.T, srv, _ *wecomtest.Server) {
			d := srv.AddDealer("A")
			p := srv.AddPerson()
			require.PanicsWithValue(t, fmt.Sprintf(`wecomtest: AddCustomer: "nobody" is not a staff member of dealer %s`, d.CorpID), func() { srv.AddCustomer(d, p, "nobody") })
		}},
		{"AddGroupChatUnknownOwnerPanics", func(t *testing.T, srv, _ *wecomtest.Server) {
			d := srv.AddDealer("A")
			require.PanicsWithValue(t, fmt.Sprintf(`wecomtest: AddGroupChat: "nobody" is not a staff member of dealer %s`, d.CorpID), func() { srv.AddGroupChat(d, "nobody") })
		}},
		{"DealerOfAnotherServerPanics", func(t *testing.T, srv, other *wecomtest.Server) {
			d := other.AddDealer("A")
			p := srv.AddPerson()
			srv.AddDealer("B") // same counter position on both servers
			require.PanicsWithValue(t, fmt.Sprintf(`wecomtest: unknown dealer %q (from another Server?)`, d.CorpID), func() { srv.AddCustomer(d, p, d.Staff[0]) })
		}},
		{"PersonOfAnotherServerPanics", func(t *testing.T, srv, other *wecomtest.Server) {
			d := srv.AddDealer("A")
			p := other.AddPerson()
			srv.AddPerson() // same counter position on both servers
			require.PanicsWithValue(t, fmt.Sprintf(`wecomtest: unknown person %q (from another Server?)`, p.UnionID), func() { srv.AddCustomer(d, p, d.Staff[0]) })
		}},
		{"UnknownChatPanics", func(t *testing.T, srv, _ *wecomtest.Server) {
			p := srv.AddPerson()
			require.PanicsWithValue(t, `wecomtest: unknown chat wrtest-nosuch`, func() { srv.AddChatMembers(wecomtest.Chat{ID: "wrtest-nosuch"}, p) })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, other := wecomtest.NewUnstartedServer(), wecomtest.NewUnstartedServer()
			tc.f(t, srv, other)
		})
	}

	// Ensure the world and the APIs can be used from many goroutines at once; run with -race.
	t.Run("SafeForConcurrentUse", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		d := b.srv.AddDealer("A")
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				for range 10 {
					p := b.srv.AddPerson()
					c := b.srv.AddCustomer(d, p, d.Staff[0])
					b.srv.ContactEvent(c, wecom.ChangeAddExternalContact)
					resp, err := trySend(b.srv, http.MethodPost, wecomtest.APIExternalUserIDToPendingID,
						url.Values{"access_token": {tok}}, map[string]any{"external_userid": []string{c.ExternalUserID}})
					if err != nil {
						errs <- err
						return
					}
					resp.Body.Close()
					b.srv.PendingIDOf(p)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Equal(t, 80, b.srv.Calls(wecomtest.APIExternalUserIDToPendingID))
	})
}

func TestServer_ContactEvent(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		changeType  string
		welcomeCode bool
	}{
		{wecom.ChangeAddExternalContact, true},
		{wecom.ChangeAddHalfExternalContact, true},
		{wecom.ChangeEditExternalContact, false},
		{wecom.ChangeDelExternalContact, false},
		{wecom.ChangeDelFollowUser, false},
	} {
		t.Run(tc.changeType, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.clock.Advance(42 * time.Second)
			d := b.srv.AddDealer("A", "alice")
			c := b.srv.AddCustomer(d, b.srv.AddPerson(), "alice")
			ev := b.srv.ContactEvent(c, tc.changeType)

			require.Equal(t, d.CorpID, ev.ToUserName)
			require.Equal(t, "sys", ev.FromUserName)
			require.Equal(t, t0.Add(42*time.Second).Unix(), ev.CreateTime)
			require.Equal(t, "event", ev.MsgType)
			require.Equal(t, wecom.EventChangeExternalContact, ev.Event)
			require.Equal(t, tc.changeType, ev.ChangeType)
			require.Equal(t, "alice", ev.UserID)
			require.Equal(t, c.ExternalUserID, ev.ExternalUserID)
			require.Equal(t, tc.welcomeCode, ev.WelcomeCode != "")
			require.Equal(t, tc.changeType, ev.Kind())
			requireRoundTrips(t, ev)
		})
	}
}

func TestServer_ChatMembers(t *testing.T) {
	t.Parallel()

	t.Run("AddMemberEvent", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A", "alice")
		p, q := b.srv.AddPerson(), b.srv.AddPerson()
		chat := b.srv.AddGroupChat(d, "alice")
		require.Equal(t, d.CorpID, chat.Dealer.CorpID)
		require.Equal(t, "alice", chat.Owner)

		ev := b.srv.AddChatMembers(chat, p, q)
		require.Equal(t, d.CorpID, ev.ToUserName)
		require.Equal(t, "sys", ev.FromUserName)
		require.Equal(t, t0.Unix(), ev.CreateTime)
		require.Equal(t, wecom.EventChangeExternalChat, ev.Event)
		require.Equal(t, chat.ID, ev.ChatID)
		require.Equal(t, wecom.ChatChangeUpdate, ev.ChangeType)
		require.Equal(t, wecom.ChatAddMember, ev.UpdateDetail)
		require.Equal(t, "0", ev.JoinScene)
		require.Equal(t, "2", ev.MemChangeCnt)
		require.Equal(t, wecom.MemList{b.srv.ExternalUserID(d, p), b.srv.ExternalUserID(d, q)}, ev.MemChangeList)
		require.Equal(t, wecom.KindChatAddMember, ev.Kind())
		requireHexVersion(t, ev.LastMemVer)
		requireHexVersion(t, ev.CurMemVer)
		require.NotEqual(t, ev.LastMemVer, ev.CurMemVer)
		requireRoundTrips(t, ev)
	})

	t.Run("DelMemberEventContinuesTheVersionChain", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A")
		p := b.srv.AddPerson()
		chat := b.srv.AddGroupChat(d, d.Staff[0], p)
		add := b.srv.AddChatMembers(chat, b.srv.AddPerson())
		del := b.srv.RemoveChatMembers(chat, p)
		require.Equal(t, wecom.ChatDelMember, del.UpdateDetail)
		require.Equal(t, "0", del.QuitScene)
		require.Empty(t, del.JoinScene)
		require.Equal(t, wecom.MemList{b.srv.ExternalUserID(d, p)}, del.MemChangeList)
		require.Equal(t, add.CurMemVer, del.LastMemVer)
		require.Equal(t, wecom.KindChatDelMember, del.Kind())
		requireRoundTrips(t, del)
	})

	t.Run("EventsDifferPerChange", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A")
		chat := b.srv.AddGroupChat(d, d.Staff[0])
		seen := map[string]bool{}
		for i := range 5 {
			ev := b.srv.AddChatMembers(chat, b.srv.AddPerson())
			key := ev.DedupKey(nil)
			require.False(t, seen[key], "change %d collides with an earlier one", i)
			seen[key] = true
		}
	})
}

// requireRoundTrips checks that ev survives Marshal and ParseEvent, which is
// what the Sender and pendinglink's handler do to it.
func requireRoundTrips(t *testing.T, ev wecom.Event) {
	t.Helper()
	raw, err := ev.Marshal()
	require.NoError(t, err)
	got, err := wecom.ParseEvent(raw)
	require.NoError(t, err)
	require.Equal(t, ev, got)
}

func requireHexVersion(t *testing.T, v string) {
	t.Helper()
	require.Len(t, v, 32, v)
	_, err := hex.DecodeString(v)
	require.NoError(t, err, fmt.Sprintf("%q is not hex", v))
}
