package wecomtest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

func TestUnionIDToPendingID(t *testing.T) {
	t.Parallel()

	t.Run("SamePersonSameIDWithin90Days", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		p := b.srv.AddPerson()
		_, ok := b.srv.PendingIDOf(p)
		require.False(t, ok, "not registered yet")

		id := mustRegister(t, b.srv, tok, p)
		require.True(t, strings.HasPrefix(id, "ptest"), id)
		b.clock.Advance(wecomtest.PendingIDLifetime - time.Second)
		tok = mustToken(t, b.srv)
		require.Equal(t, id, mustRegister(t, b.srv, tok, p))
		got, ok := b.srv.PendingIDOf(p)
		require.True(t, ok)
		require.Equal(t, id, got)
	})

	t.Run("PendingReissueNewIDEveryCall", func(t *testing.T) {
		t.Parallel()
		// Ensure the other answer to §9 #10: every call issues a new id,
		// and the newest is the one PendingIDOf (and lookups) answer.
		b := setup(t, wecomtest.WithPendingReissue(true))
		tok := mustToken(t, b.srv)
		p := b.srv.AddPerson()
		first := mustRegister(t, b.srv, tok, p)
		b.clock.Advance(time.Hour)
		second := mustRegister(t, b.srv, tok, p)
		require.NotEqual(t, first, second)
		got, ok := b.srv.PendingIDOf(p)
		require.True(t, ok)
		require.Equal(t, second, got)
	})

	t.Run("DifferentPeopleDifferentIDs", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		seen := map[string]bool{}
		for range 20 {
			id := mustRegister(t, b.srv, tok, b.srv.AddPerson())
			require.False(t, seen[id], "duplicate pending_id %s", id)
			seen[id] = true
		}
	})

	// Ensure an id expires after 90 days: PendingIDOf and the batch API stop
	// returning it, and the next registration issues a new one.
	t.Run("NewIDAfter90DaysAndOldOneNeverReturned", func(t *testing.T) {
		t.Parallel()
		s := setupScene(t)
		old := mustRegister(t, s.srv, s.tok, s.p)

		s.clock.Advance(wecomtest.PendingIDLifetime)
		tok := mustToken(t, s.srv)
		_, ok := s.srv.PendingIDOf(s.p)
		require.False(t, ok)
		require.Empty(t, mustBatch(t, s.srv, tok, "", s.c.ExternalUserID), "expired ids are never returned")

		renewed := mustRegister(t, s.srv, tok, s.p)
		require.NotEqual(t, old, renewed)
		require.Equal(t, map[string]string{s.c.ExternalUserID: renewed}, mustBatch(t, s.srv, tok, "", s.c.ExternalUserID))
		got, _ := s.srv.PendingIDOf(s.p)
		require.Equal(t, renewed, got)
	})

	t.Run("ErrUnknownUnionID610014", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		r := register(t, b.srv, mustToken(t, b.srv), wecomtest.Person{UnionID: "test-unobody", OpenID: "test-onobody"})
		require.Equal(t, 610014, r.Errcode)
		require.Empty(t, r.PendingID)
	})

	t.Run("ErrOpenIDMismatch610014", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		p, q := b.srv.AddPerson(), b.srv.AddPerson()
		r := register(t, b.srv, mustToken(t, b.srv), wecomtest.Person{UnionID: p.UnionID, OpenID: q.OpenID})
		require.Equal(t, 610014, r.Errcode)
		_, ok := b.srv.PendingIDOf(p)
		require.False(t, ok, "a failed registration registers nobody")
	})

	t.Run("ErrMissingField40058", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		p := b.srv.AddPerson()
		tok := mustToken(t, b.srv)
		require.Equal(t, 40058, post[common](t, b.srv, wecomtest.APIUnionIDToPendingID, tok, map[string]string{"unionid": p.UnionID}).Errcode)
		require.Equal(t, 40058, post[common](t, b.srv, wecomtest.APIUnionIDToPendingID, tok, map[string]string{"openid": p.OpenID}).Errcode)
	})
}

func TestExternalUserIDToPendingID(t *testing.T) {
	t.Parallel()

	t.Run("ReturnsTheRegisteredPendingIDForEveryDealer", func(t *testing.T) {
		t.Parallel()
		s := setupTwoDealers(t)
		require.NotEqual(t, s.c1.ExternalUserID, s.c2.ExternalUserID, "external ids differ per dealer")

		require.Equal(t, map[string]string{s.c1.ExternalUserID: s.pid, s.c2.ExternalUserID: s.pid},
			mustBatch(t, s.srv, s.tok, "", s.c1.ExternalUserID, s.c2.ExternalUserID))
	})

	t.Run("CustomerAddedBeforeRegistration", func(t *testing.T) {
		t.Parallel()
		s := setupScene(t)
		require.Empty(t, mustBatch(t, s.srv, s.tok, "", s.c.ExternalUserID))
		pid := mustRegister(t, s.srv, s.tok, s.p)
		require.Equal(t, map[string]string{s.c.ExternalUserID: pid}, mustBatch(t, s.srv, s.tok, "", s.c.ExternalUserID))
	})

	t.Run("OmitsUnregisteredByDefault", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		d := b.srv.AddDealer("Dealer A")
		reg, unreg := b.srv.AddPerson(), b.srv.AddPerson()
		pid := mustRegister(t, b.srv, tok, reg)
		cr := b.srv.AddCustomer(d, reg, d.Staff[0])
		cu := b.srv.AddCustomer(d, unreg, d.Staff[0])

		r := batch(t, b.srv, tok, "", cu.ExternalUserID, cr.ExternalUserID)
		require.Equal(t, 0, r.Errcode)
		require.Len(t, r.Result, 1, "omitted, not returned empty")
		require.Equal(t, map[string]string{cr.ExternalUserID: pid}, r.pendingIDs())
		_, ok := b.srv.PendingIDOf(unreg)
		require.False(t, ok, "the batch API issues nothing by default")
	})

	// Ensure §9 #17's other reading: the batch answers for a person the
	// brand never registered, and a later registration returns that same id.
	t.Run("PendingForUnregisteredIssuesTheIDRegistrationReturns", func(t *testing.T) {
		t.Parallel()
		s := setupScene(t, wecomtest.WithPendingForUnregistered(true))

		got := mustBatch(t, s.srv, s.tok, "", s.c.ExternalUserID)
		require.Len(t, got, 1)
		pid := got[s.c.ExternalUserID]
		require.True(t, strings.HasPrefix(pid, "ptest"), pid)
		known, ok := s.srv.PendingIDOf(s.p)
		require.True(t, ok)
		require.Equal(t, pid, known)
		require.Equal(t, pid, mustRegister(t, s.srv, s.tok, s.p))
		require.Equal(t, got, mustBatch(t, s.srv, s.tok, "", s.c.ExternalUserID), "stable across calls")
	})

	t.Run("OmitsUnknownIDs", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		r := batch(t, b.srv, mustToken(t, b.srv), "", "wmtest-nobody", "garbage")
		require.Equal(t, 0, r.Errcode)
		require.NotNil(t, r.Result, "result is an empty array, not null")
		require.Empty(t, r.Result)
	})

	t.Run("OmitsRemovedCustomer", func(t *testing.T) {
		t.Parallel()
		s := setupScene(t)
		pid := mustRegister(t, s.srv, s.tok, s.p)
		s.srv.RemoveCustomer(s.c)
		require.Empty(t, mustBatch(t, s.srv, s.tok, "", s.c.ExternalUserID))

		again := s.srv.AddCustomer(s.d, s.p, s.d.Staff[0])
		require.Equal(t, s.c.ExternalUserID, again.ExternalUserID, "the external id is stable per (dealer, person)")
		require.Equal(t, map[string]string{s.c.ExternalUserID: pid}, mustBatch(t, s.srv, s.tok, "", s.c.ExternalUserID))
	})

	t.Run("StillACustomerWhileAnotherStaffFollows", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		d := b.srv.AddDealer("Dealer A", "alice", "bob")
		p := b.srv.AddPerson()
		pid := mustRegister(t, b.srv, tok, p)
		ca := b.srv.AddCustomer(d, p, "alice")
		cb := b.srv.AddCustomer(d, p, "bob")
		require.Equal(t, ca.ExternalUserID, cb.ExternalUserID)
		b.srv.RemoveCustomer(ca)
		require.Equal(t, map[string]string{ca.ExternalUserID: pid}, mustBatch(t, b.srv, tok, "", ca.ExternalUserID))
		b.srv.RemoveCustomer(cb)
		require.Empty(t, mustBatch(t, b.srv, tok, "", ca.ExternalUserID))
	})

	t.Run("DuplicateIDsAnsweredOnce", func(t *testing.T) {
		t.Parallel()
		s := setupScene(t)
		mustRegister(t, s.srv, s.tok, s.p)
		r := batch(t, s.srv, s.tok, "", s.c.ExternalUserID, s.c.ExternalUserID)
		require.Len(t, r.Result, 1)
	})

	t.Run("Accepts100IDs", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		d := b.srv.AddDealer("Dealer A")
		var ids []string
		want := map[string]string{}
		for range 100 {
			p := b.srv.AddPerson()
			c := b.srv.AddCustomer(d, p, d.Staff[0])
			ids = append(ids, c.ExternalUserID)
			want[c.ExternalUserID] = mustRegister(t, b.srv, tok, p)
		}
		require.Equal(t, want, mustBatch(t, b.srv, tok, "", ids...))
	})

	t.Run("ErrMoreThan100IDs40058", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ids := make([]string, 101)
		for i := range ids {
			ids[i] = fmt.Sprintf("wmtest%06d", i)
		}
		require.Equal(t, 40058, batch(t, b.srv, mustToken(t, b.srv), "", ids...).Errcode)
	})

	t.Run("ErrNoIDs40058", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.Equal(t, 40058, batch(t, b.srv, mustToken(t, b.srv), "").Errcode)
	})

	// Ensure chat_id limits the answer to that chat's members, including
	// members who are not customers, and ignores everybody else.
	t.Run("ChatIDAnswersOnlyThatChatsMembers", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		d := b.srv.AddDealer("Dealer A")
		inChat, customer, otherChat := b.srv.AddPerson(), b.srv.AddPerson(), b.srv.AddPerson()
		for _, p := range []wecomtest.Person{inChat, customer, otherChat} {
			mustRegister(t, b.srv, tok, p)
		}
		chat := b.srv.AddGroupChat(d, d.Staff[0], inChat)
		b.srv.AddGroupChat(d, d.Staff[0], otherChat)
		cust := b.srv.AddCustomer(d, customer, d.Staff[0])
		b.srv.AddChatMembers(chat, customer)
		inChatID, otherID := b.srv.ExternalUserID(d, inChat), b.srv.ExternalUserID(d, otherChat)

		pidIn, _ := b.srv.PendingIDOf(inChat)
		pidCust, _ := b.srv.PendingIDOf(customer)
		require.Equal(t,
			map[string]string{inChatID: pidIn, cust.ExternalUserID: pidCust},
			mustBatch(t, b.srv, tok, chat.ID, inChatID, cust.ExternalUserID, otherID))
		// Without chat_id only customers are answered.
		require.Equal(t, map[string]string{cust.ExternalUserID: pidCust},
			mustBatch(t, b.srv, tok, "", inChatID, cust.ExternalUserID, otherID))
	})

	t.Run("ChatIDIgnoresFormerMembers", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		d := b.srv.AddDealer("Dealer A")
		p := b.srv.AddPerson()
		mustRegister(t, b.srv, tok, p)
		chat := b.srv.AddGroupChat(d, d.Staff[0], p)
		ev := b.srv.RemoveChatMembers(chat, p)
		require.Empty(t, mustBatch(t, b.srv, tok, chat.ID, ev.MemChangeList...))
	})

	t.Run("ChatIDIgnoresSamePersonOfAnotherDealer", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		d1, d2 := b.srv.AddDealer("Dealer A"), b.srv.AddDealer("Dealer B")
		p := b.srv.AddPerson()
		mustRegister(t, b.srv, tok, p)
		chat := b.srv.AddGroupChat(d1, d1.Staff[0], p)
		c2 := b.srv.AddCustomer(d2, p, d2.Staff[0])
		require.Empty(t, mustBatch(t, b.srv, tok, chat.ID, c2.ExternalUserID))
	})

	t.Run("ErrUnknownChat40050", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.Equal(t, 40050, batch(t, b.srv, mustToken(t, b.srv), "wrtest-nosuchchat", "wmtest000001").Errcode)
	})

	t.Run("DownstreamTokenSeesOnlyItsOwnCorp", func(t *testing.T) {
		t.Parallel()
		s := setupTwoDealers(t)
		chat2 := s.srv.AddGroupChat(s.d2, s.d2.Staff[0], s.p)

		down := mustDownstreamToken(t, s.srv, s.d1)
		require.Equal(t, map[string]string{s.c1.ExternalUserID: s.pid},
			mustBatch(t, s.srv, down, "", s.c1.ExternalUserID, s.c2.ExternalUserID))
		require.Equal(t, 40050, batch(t, s.srv, down, chat2.ID, s.c2.ExternalUserID).Errcode, "another corp's chat")
	})
}

func TestUnionIDToExternalUserID(t *testing.T) {
	t.Parallel()

	t.Run("ReturnsEachDealerWhereACustomerInOrder", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d1, d2, d3 := b.srv.AddDealer("A"), b.srv.AddDealer("B"), b.srv.AddDealer("C")
		p := b.srv.AddPerson()
		c3 := b.srv.AddCustomer(d3, p, d3.Staff[0])
		c1 := b.srv.AddCustomer(d1, p, d1.Staff[0])
		b.srv.AddGroupChat(d2, d2.Staff[0], p) // a chat member is not a customer

		r := externalIDs(t, b, map[string]string{"unionid": p.UnionID, "openid": p.OpenID})
		require.Equal(t, 0, r.Errcode, r.Errmsg)
		require.Len(t, r.Info, 2)
		require.Equal(t, d1.CorpID, r.Info[0].CorpID)
		require.Equal(t, c1.ExternalUserID, r.Info[0].ExternalUserID)
		require.Equal(t, d3.CorpID, r.Info[1].CorpID)
		require.Equal(t, c3.ExternalUserID, r.Info[1].ExternalUserID)
		_, ok := b.srv.PendingIDOf(p)
		require.False(t, ok, "no registration needed, none made")
	})

	t.Run("CorpIDFilters", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d1, d2 := b.srv.AddDealer("A"), b.srv.AddDealer("B")
		p := b.srv.AddPerson()
		b.srv.AddCustomer(d1, p, d1.Staff[0])
		c2 := b.srv.AddCustomer(d2, p, d2.Staff[0])
		r := externalIDs(t, b, map[string]string{"unionid": p.UnionID, "openid": p.OpenID, "corpid": d2.CorpID})
		require.Len(t, r.Info, 1)
		require.Equal(t, c2.ExternalUserID, r.Info[0].ExternalUserID)
		r = externalIDs(t, b, map[string]string{"unionid": p.UnionID, "openid": p.OpenID, "corpid": "wwtestnosuchcorp01"})
		require.Equal(t, 0, r.Errcode)
		require.Empty(t, r.Info)
	})

	t.Run("RemovedCustomerNotReturned", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A")
		p := b.srv.AddPerson()
		b.srv.RemoveCustomer(b.srv.AddCustomer(d, p, d.Staff[0]))
		r := externalIDs(t, b, map[string]string{"unionid": p.UnionID, "openid": p.OpenID})
		require.Equal(t, 0, r.Errcode)
		require.NotNil(t, r.Info, "an empty array, not null")
		require.Empty(t, r.Info)
	})

	t.Run("ErrUnknownOrMismatched610014", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		p, q := b.srv.AddPerson(), b.srv.AddPerson()
		require.Equal(t, 610014, externalIDs(t, b, map[string]string{"unionid": "test-unobody", "openid": p.OpenID}).Errcode)
		require.Equal(t, 610014, externalIDs(t, b, map[string]string{"unionid": p.UnionID, "openid": q.OpenID}).Errcode)
		require.Equal(t, 40058, externalIDs(t, b, map[string]string{"unionid": p.UnionID}).Errcode)
	})
}

func TestListAppShareInfo(t *testing.T) {
	t.Parallel()

	t.Run("PaginatesWithCursorUntilEnding", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		want := map[string]wecomtest.Dealer{}
		for i := range 5 {
			d := b.srv.AddDealer(fmt.Sprintf("Dealer %d", i))
			want[d.CorpID] = d
		}
		got := map[string]bool{}
		cursor, pages := "", []int{}
		for {
			r := listShares(t, b, map[string]any{"agentid": b.srv.AgentID, "business_type": 1, "limit": 2, "cursor": cursor})
			require.Equal(t, 0, r.Errcode, r.Errmsg)
			pages = append(pages, len(r.CorpList))
			for _, c := range r.CorpList {
				d, ok := want[c.CorpID]
				require.True(t, ok, c.CorpID)
				require.Equal(t, d.Name, c.CorpName)
				require.Equal(t, d.AgentID, c.AgentID)
				require.False(t, got[c.CorpID], "corp listed twice")
				got[c.CorpID] = true
			}
			if r.Ending == 1 {
				require.Empty(t, r.NextCursor)
				break
			}
			require.NotEmpty(t, r.NextCursor)
			cursor = r.NextCursor
		}
		require.Equal(t, []int{2, 2, 1}, pages)
		require.Len(t, got, 5)
	})

	t.Run("LimitZeroReturnsAll", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for range 3 {
			b.srv.AddDealer("D")
		}
		r := listShares(t, b, map[string]any{"agentid": b.srv.AgentID, "business_type": 1})
		require.Len(t, r.CorpList, 3)
		require.Equal(t, 1, r.Ending)
	})

	t.Run("NoDealersIsEmptyAndEnding", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		r := listShares(t, b, map[string]any{"agentid": b.srv.AgentID, "business_type": 1})
		require.Equal(t, 0, r.Errcode)
		require.NotNil(t, r.CorpList)
		require.Empty(t, r.CorpList)
		require.Equal(t, 1, r.Ending)
	})

	t.Run("CorpIDFilters", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.srv.AddDealer("A")
		d := b.srv.AddDealer("B")
		r := listShares(t, b, map[string]any{"agentid": b.srv.AgentID, "business_type": 1, "corpid": d.CorpID})
		require.Len(t, r.CorpList, 1)
		require.Equal(t, d.CorpID, r.CorpList[0].CorpID)
	})

	for _, tc := range []struct {
		name string
		body func(b testBundle) map[string]any
		code int
	}{
		{"ErrBusinessTypeNot1_40058", func(b testBundle) map[string]any { return map[string]any{"agentid": b.srv.AgentID} }, 40058},
		{"ErrWrongAgentID301002", func(testBundle) map[string]any { return map[string]any{"agentid": 1, "business_type": 1} }, 301002},
		{"ErrLimitOver100_40058", func(b testBundle) map[string]any {
			return map[string]any{"agentid": b.srv.AgentID, "business_type": 1, "limit": 101}
		}, 40058},
		{"ErrForeignCursor40058", func(b testBundle) map[string]any {
			return map[string]any{"agentid": b.srv.AgentID, "business_type": 1, "cursor": "abc"}
		}, 40058},
		{"ErrAgentIDAsString47001", func(b testBundle) map[string]any {
			return map[string]any{"agentid": fmt.Sprint(b.srv.AgentID), "business_type": 1}
		}, 47001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			require.Equal(t, tc.code, listShares(t, b, tc.body(b)).Errcode)
		})
	}

	t.Run("ErrDownstreamToken48002", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		down := mustDownstreamToken(t, b.srv, b.srv.AddDealer("A"))
		r := post[common](t, b.srv, wecomtest.APIListAppShareInfo, down, map[string]any{"agentid": b.srv.AgentID, "business_type": 1})
		require.Equal(t, 48002, r.Errcode)
	})
}

func TestDownstreamGetToken(t *testing.T) {
	t.Parallel()

	t.Run("OKAndAcceptedByBatchAndGroupChatOnly", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A")
		r := post[tokenResp](t, b.srv, wecomtest.APIDownstreamGetToken, mustToken(t, b.srv),
			map[string]any{"corpid": d.CorpID, "business_type": 1, "agentid": d.AgentID})
		require.Equal(t, 0, r.Errcode, r.Errmsg)
		require.Equal(t, 7200, r.ExpiresIn)
		require.True(t, strings.HasPrefix(r.AccessToken, "testtoken-"))

		require.Equal(t, 0, batch(t, b.srv, r.AccessToken, "", "wmtest-any").Errcode)
		require.Equal(t, 0, groupChat(t, b.srv, r.AccessToken, b.srv.AddGroupChat(d, d.Staff[0]).ID).Errcode)
		p := b.srv.AddPerson()
		for _, api := range []string{wecomtest.APIUnionIDToPendingID, wecomtest.APIUnionIDToExternalUserID, wecomtest.APIDownstreamGetToken} {
			got := post[common](t, b.srv, api, r.AccessToken, map[string]any{
				"unionid": p.UnionID, "openid": p.OpenID, "corpid": d.CorpID, "business_type": 1, "agentid": d.AgentID,
			})
			require.Equal(t, 48002, got.Errcode, api)
		}
		_, ok := b.srv.PendingIDOf(p)
		require.False(t, ok)
	})

	t.Run("ExpiresLikeUpstreamTokens", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		down := mustDownstreamToken(t, b.srv, b.srv.AddDealer("A"))
		b.clock.Advance(7200 * time.Second)
		require.Equal(t, 42001, batch(t, b.srv, down, "", "wmtest-any").Errcode)
	})

	for _, tc := range []struct {
		name string
		body func(d wecomtest.Dealer) map[string]any
		code int
	}{
		{"ErrBusinessTypeNot1_40058", func(d wecomtest.Dealer) map[string]any {
			return map[string]any{"corpid": d.CorpID, "agentid": d.AgentID}
		}, 40058},
		{"ErrUnknownCorp670001", func(d wecomtest.Dealer) map[string]any {
			return map[string]any{"corpid": "wwtestnosuchcorp01", "business_type": 1, "agentid": d.AgentID}
		}, 670001},
		{"ErrMissingCorp41002", func(d wecomtest.Dealer) map[string]any {
			return map[string]any{"business_type": 1, "agentid": d.AgentID}
		}, 41002},
		{"ErrWrongAgentID301002", func(d wecomtest.Dealer) map[string]any {
			return map[string]any{"corpid": d.CorpID, "business_type": 1, "agentid": 1000002}
		}, 301002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			d := b.srv.AddDealer("A")
			r := post[tokenResp](t, b.srv, wecomtest.APIDownstreamGetToken, mustToken(t, b.srv), tc.body(d))
			require.Equal(t, tc.code, r.Errcode)
			require.Empty(t, r.AccessToken)
		})
	}
}

// externalIDs calls unionid_to_external_userid with a fresh token.
func externalIDs(t *testing.T, b testBundle, body map[string]string) externalResp {
	t.Helper()
	return post[externalResp](t, b.srv, wecomtest.APIUnionIDToExternalUserID, mustToken(t, b.srv), body)
}

// listShares calls list_app_share_info with a fresh token.
func listShares(t *testing.T, b testBundle, body map[string]any) shareResp {
	t.Helper()
	return post[shareResp](t, b.srv, wecomtest.APIListAppShareInfo, mustToken(t, b.srv), body)
}
