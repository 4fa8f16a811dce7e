package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// The end-to-end tests run the real server (startApp) against the fake
// WeCom over HTTP: fans are registered through /v1, customers arrive as
// encrypted callbacks, and the results are read back through /v1.

func TestE2E_FanFirstThenCustomer(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{})
	p := w.fan()

	code, fr := w.registerFan(p)
	require.Equal(t, http.StatusCreated, code, "a fan registered within quota is registered at once")
	pid, ok := w.wc.PendingIDOf(p)
	require.True(t, ok, "WeCom issued a pending_id")
	require.Equal(t, pid, fr.PendingID)
	require.Equal(t, store.FanRegistered, fr.State)
	require.NotNil(t, fr.ExpiresAt)
	require.True(t, fr.ExpiresAt.Equal(w.wc.Clock.Now().Add(store.PendingIDLifetime)), "expires 90 days after issue, got %s", fr.ExpiresAt)
	require.Empty(t, fr.Links)

	c, ev := w.addCustomer(p, "staff-b")
	w.send(ev)
	l := w.waitLinks(p.UnionID, 1)[0]
	require.Equal(t, p.UnionID, l.UnionID)
	require.Equal(t, p.OpenID, l.OpenID)
	require.Equal(t, pid, l.PendingID)
	require.Equal(t, c.Dealer.CorpID, l.CorpID)
	require.Equal(t, c.ExternalUserID, l.ExternalUserID)
	require.Equal(t, "staff-b", l.UserID, "the link names the staff member who added the customer")
	require.Empty(t, l.ChatID)
	require.True(t, l.Active)
	require.Nil(t, l.EndedAt)

	cust := w.customer(c.Dealer.CorpID, c.ExternalUserID)
	require.NotNil(t, cust)
	require.Len(t, cust.Links, 1)
	require.Equal(t, l.ID, cust.Links[0].ID)
	require.Len(t, cust.Resolutions, 1)
	require.Equal(t, pid, cust.Resolutions[0].PendingID)
	require.Equal(t, store.ResolutionMatched, cust.Resolutions[0].State)
	require.Equal(t, "staff-b", cust.Resolutions[0].UserID)

	f := w.getFan(p.UnionID)
	require.Equal(t, pid, f.PendingID)
	require.NotNil(t, f.ExpiresAt)
	require.True(t, f.ExpiresAt.Equal(*fr.ExpiresAt))
	require.Len(t, f.Links, 1)
	require.Equal(t, l.ID, f.Links[0].ID)

	st := w.waitIdle()
	require.EqualValues(t, 1, st.Links.Total)
	require.EqualValues(t, 1, st.Links.Active)
	require.EqualValues(t, 1, st.Events.Resolved)
	require.EqualValues(t, 1, st.Fans.Registered)
}

func TestE2E_CustomerFirstThenFan(t *testing.T) {
	t.Parallel()
	t.Run("PendingIDForUnregistered", testCustomerFirstPendingID)
	t.Run("BackfillWithoutPendingID", testCustomerFirstBackfill)
}

func testCustomerFirstPendingID(t *testing.T) {
	t.Parallel()
	// WeCom answers a pending_id for a person the brand has not registered
	// yet (§9 #17), so the customer can be resolved before the fan exists.
	w := startE2E(t, e2eOptions{PendingForUnregistered: true})
	p := w.fan()
	c, ev := w.addCustomer(p, "staff-a")
	w.send(ev)

	cust := w.waitResolution(c)
	r := cust.Resolutions[0]
	require.NotEmpty(t, r.PendingID)
	require.Equal(t, store.ResolutionResolved, r.State, "resolved but matched to nobody yet")
	require.Empty(t, cust.Links)
	w.waitIdle()
	batchCalls := w.wc.Calls(wecomtest.APIExternalUserIDToPendingID)

	code, fr := w.registerFan(p)
	require.Equal(t, http.StatusCreated, code)
	require.Equal(t, r.PendingID, fr.PendingID, "registration returns the pending_id the customer resolved to")
	require.Len(t, fr.Links, 1, "the link is made at registration and shown in its answer")
	l := fr.Links[0]
	require.Equal(t, c.Dealer.CorpID, l.CorpID)
	require.Equal(t, c.ExternalUserID, l.ExternalUserID)
	require.Equal(t, "staff-a", l.UserID)
	require.True(t, l.Active)
	require.Equal(t, batchCalls, w.wc.Calls(wecomtest.APIExternalUserIDToPendingID), "matching at registration needs no new batch lookup")
	require.Equal(t, 1, w.wc.Calls(wecomtest.APIUnionIDToPendingID))

	cust = w.customer(c.Dealer.CorpID, c.ExternalUserID)
	require.Equal(t, store.ResolutionMatched, cust.Resolutions[0].State)
	require.Len(t, cust.Links, 1)
	require.Equal(t, l.ID, cust.Links[0].ID)
	st := w.waitIdle()
	require.EqualValues(t, 1, st.Links.Total)
}

func testCustomerFirstBackfill(t *testing.T) {
	t.Parallel()
	// WeCom has no pending_id for a person never registered (the fake's
	// default reading of §9 #17); registration's backfill finds the customer.
	w := startE2E(t, e2eOptions{Env: map[string]string{"PENDINGLINK_BACKFILL_EXISTING": "true"}})
	p := w.fan()
	c, ev := w.addCustomer(p, "staff-a")
	w.send(ev)
	// The resolve job asked WeCom, got nothing and waits for its one delayed retry.
	w.waitFor("the resolve job to wait for its retry", func() bool {
		return len(w.jobs("resolve", rivertype.JobStateScheduled)) == 1
	})
	require.Empty(t, w.linksOf(p.UnionID))

	code, fr := w.registerFan(p)
	require.Equal(t, http.StatusCreated, code)
	l := w.waitLinks(p.UnionID, 1)[0]
	require.Equal(t, c.Dealer.CorpID, l.CorpID)
	require.Equal(t, c.ExternalUserID, l.ExternalUserID)
	require.Equal(t, fr.PendingID, l.PendingID)
	require.True(t, l.Active)
	require.Equal(t, 1, w.wc.Calls(wecomtest.APIUnionIDToExternalUserID))
}

func TestE2E_Duplicates(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{})
	p := w.fan()

	code, first := w.registerFan(p)
	require.Equal(t, http.StatusCreated, code)
	code, second := w.registerFan(p)
	require.Equal(t, http.StatusOK, code, "a fan holding a live pending_id is not registered again")
	require.Equal(t, first.PendingID, second.PendingID)
	br := w.registerBatch([]wecomtest.Person{p})
	require.Equal(t, apiclient.BatchResponse{Accepted: 1, Queued: 0, Skipped: 1}, br)

	c, ev := w.addCustomer(p, "staff-a")
	w.sendAll([]wecom.Event{ev, ev, ev, ev}) // WeCom's retries, concurrently
	w.waitLinks(p.UnionID, 1)
	w.send(ev) // a late retry, after the link was made

	st := w.waitIdle()
	require.EqualValues(t, 1, st.Events.Received, "one event stored")
	require.EqualValues(t, 4, st.Events.Duplicate, "every repeat counted")
	require.Equal(t, map[string]int64{store.KindAddExternalContact: 1}, st.Events.ByType)
	require.EqualValues(t, 1, st.Links.Total)
	require.EqualValues(t, 1, st.Links.Active)
	require.Len(t, w.linksOf(p.UnionID), 1)
	require.Len(t, w.customer(c.Dealer.CorpID, c.ExternalUserID).Resolutions, 1)
	require.Equal(t, 1, w.wc.Calls(wecomtest.APIUnionIDToPendingID), "the fan was registered with WeCom once")
	require.Equal(t, 1, w.calls.registrations(p.UnionID))
}

func TestE2E_Removals(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{})
	var (
		fans  []wecomtest.Person
		custs []wecomtest.Customer
		evs   []wecom.Event
	)
	for i := range 3 {
		p := w.fan()
		code, _ := w.registerFan(p)
		require.Equal(t, http.StatusCreated, code)
		c, ev := w.addCustomer(p, []string{"staff-a", "staff-b"}[i%2])
		fans, custs, evs = append(fans, p), append(custs, c), append(evs, ev)
	}
	w.sendAll(evs)
	w.waitFor("3 active links", func() bool { return w.status().Links.Active == 3 })

	w.remove(custs[0], wecom.ChangeDelExternalContact)
	w.remove(custs[1], wecom.ChangeDelFollowUser)

	w.waitFor("2 links ended", func() bool { return w.status().Links.Active == 1 })
	st := w.waitIdle()
	require.EqualValues(t, 3, st.Links.Total, "ended links are kept")
	require.EqualValues(t, 1, st.Links.Active)

	for i, reason := range []string{wecom.ChangeDelExternalContact, wecom.ChangeDelFollowUser} {
		cust := w.customer(custs[i].Dealer.CorpID, custs[i].ExternalUserID)
		require.Len(t, cust.Links, 1)
		l := cust.Links[0]
		require.False(t, l.Active, "customer %d", i)
		require.NotNil(t, l.EndedAt)
		require.Equal(t, reason, l.EndReason)
		fl := w.getFan(fans[i].UnionID).Links
		require.Len(t, fl, 1)
		require.False(t, fl[0].Active)
	}
	ls := w.linksOf(fans[2].UnionID)
	require.Len(t, ls, 1)
	require.True(t, ls[0].Active, "a customer nobody removed keeps the link")

	// Added again later: the same link is active again, no second link.
	w.wc.Clock.Advance(time.Minute)
	c0 := w.wc.AddCustomer(w.dealers[0], fans[0], "staff-b")
	w.send(w.wc.ContactEvent(c0, wecom.ChangeAddExternalContact))
	w.waitFor("the link re-activated", func() bool { return w.status().Links.Active == 2 })
	st = w.waitIdle()
	require.EqualValues(t, 3, st.Links.Total)
	ls = w.linksOf(fans[0].UnionID)
	require.Len(t, ls, 1)
	require.True(t, ls[0].Active)
	require.Nil(t, ls[0].EndedAt)
	require.Equal(t, "staff-b", ls[0].UserID)
}

func TestE2E_GroupChat(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{PendingForUnregistered: true})
	d := w.dealers[0]
	fans := []wecomtest.Person{w.fan(), w.fan(), w.fan()}
	others := []wecomtest.Person{w.fan(), w.fan()}
	w.registerBatch(fans)
	w.waitFor("3 fans registered", func() bool { return w.status().Fans.Registered == 3 })

	// Members met only in the chat are nobody's customers: WeCom answers for
	// them only when the call names the chat.
	chat := w.wc.AddGroupChat(d, "staff-a")
	ev := w.wc.AddChatMembers(chat, fans[0], others[0], fans[1], others[1], fans[2])
	w.send(ev)

	for _, f := range fans {
		l := w.waitLinks(f.UnionID, 1)[0]
		require.Equal(t, chat.ID, l.ChatID)
		require.Equal(t, d.CorpID, l.CorpID)
		require.Equal(t, w.wc.ExternalUserID(d, f), l.ExternalUserID)
		require.True(t, l.Active)
	}
	st := w.waitIdle()
	require.EqualValues(t, 3, st.Links.Total, "only the fans are linked")
	require.EqualValues(t, 1, st.Events.Received)
	require.EqualValues(t, 1, st.Events.ByType[store.KindAddMember])
	for _, o := range others {
		cust := w.customer(d.CorpID, w.wc.ExternalUserID(d, o))
		require.NotNil(t, cust, "every member is resolved")
		require.Len(t, cust.Resolutions, 1)
		require.Equal(t, chat.ID, cust.Resolutions[0].ChatID)
		require.Empty(t, cust.Links)
	}

	members := map[string]bool{}
	for _, id := range ev.MemChangeList {
		members[id] = true
	}
	asked := map[string]bool{}
	for _, b := range w.calls.batchRequests() {
		for _, id := range b.ExternalUserID {
			if members[id] {
				require.Equal(t, chat.ID, b.ChatID, "a member is looked up with the chat's chat_id")
				asked[id] = true
			}
		}
	}
	require.Len(t, asked, len(members), "every member was looked up")
}

func TestE2E_ExpiryAndRenewal(t *testing.T) {
	t.Parallel()

	t.Run("ExpiredPendingIDNeverMatches", func(t *testing.T) {
		t.Parallel()
		w := startE2E(t, e2eOptions{PendingForUnregistered: true})
		p := w.fan()
		code, fr := w.registerFan(p)
		require.Equal(t, http.StatusCreated, code)

		w.wc.Clock.Advance(store.PendingIDLifetime + time.Hour)
		f := w.getFan(p.UnionID)
		require.Empty(t, f.PendingID, "no live pending_id")
		require.Nil(t, f.ExpiresAt)
		require.Len(t, f.PendingIDs, 1)
		require.Equal(t, fr.PendingID, f.PendingIDs[0].PendingID, "the expired id is kept")
		st := w.status()
		require.EqualValues(t, 1, st.Fans.Expired)
		require.Zero(t, st.Fans.Valid)

		c, ev := w.addCustomer(p, "staff-a")
		w.send(ev)
		cust := w.waitResolution(c)
		require.NotEqual(t, fr.PendingID, cust.Resolutions[0].PendingID)
		require.Equal(t, store.ResolutionResolved, cust.Resolutions[0].State)
		w.waitIdle()
		require.Empty(t, w.linksOf(p.UnionID), "an expired pending_id matches nobody")
	})

	t.Run("RenewsExpiringFansLinkedOrNot", func(t *testing.T) {
		t.Parallel()
		w := startE2E(t, e2eOptions{Dealers: 2, Env: map[string]string{"PENDINGLINK_RENEW_INTERVAL": "200ms"}})
		p, linked := w.fan(), w.fan()
		code, fr := w.registerFan(p)
		require.Equal(t, http.StatusCreated, code)
		code, _ = w.registerFan(linked)
		require.Equal(t, http.StatusCreated, code)
		_, ev := w.addCustomer(linked, "staff-a")
		w.send(ev)
		w.waitLinks(linked.UnionID, 1)

		// Within 7 days of expiry both fans are re-registered: the linked
		// one too, since another dealer may still add it.
		w.wc.Clock.Advance(store.PendingIDLifetime - 6*24*time.Hour)
		w.waitFor("the renewer to re-register both expiring fans", func() bool {
			return w.calls.registrations(p.UnionID) >= 2 && w.calls.registrations(linked.UnionID) >= 2
		})

		// Past expiry WeCom issues a new id; the renewer gets it, and a
		// customer added now is linked through it.
		w.wc.Clock.Advance(7 * 24 * time.Hour)
		var f apiclient.FanResponse
		w.waitFor("a new pending_id", func() bool {
			f = w.getFan(p.UnionID)
			return f.PendingID != "" && f.PendingID != fr.PendingID
		})
		pid, ok := w.wc.PendingIDOf(p)
		require.True(t, ok)
		require.Equal(t, pid, f.PendingID)
		require.Equal(t, pid, f.PendingIDs[0].PendingID)
		require.True(t, f.PendingIDs[0].IssuedAt.Equal(w.wc.Clock.Now()), "issued by the renewal just now")
		require.True(t, f.ExpiresAt.Equal(w.wc.Clock.Now().Add(store.PendingIDLifetime)), "the new id lives 90 days")
		c, ev := w.addCustomer(p, "staff-b")
		w.send(ev)
		l := w.waitLinks(p.UnionID, 1)[0]
		require.Equal(t, pid, l.PendingID)
		require.Equal(t, c.ExternalUserID, l.ExternalUserID)

		// The fan linked at the first dealer holds a new pending_id too, so
		// when the second dealer adds it after day 90 it links there too.
		w.waitFor("the linked fan's new pending_id", func() bool {
			id, ok := w.wc.PendingIDOf(linked)
			return ok && w.getFan(linked.UnionID).PendingID == id
		})
		c2 := w.wc.AddCustomer(w.dealers[1], linked, "staff-a")
		w.send(w.wc.ContactEvent(c2, wecom.ChangeAddExternalContact))
		got := w.waitLinks(linked.UnionID, 2)
		require.Equal(t, w.dealers[1].CorpID, got[0].CorpID, "newest first")
		require.True(t, got[1].Active, "the first dealer's link stands")
	})

	t.Run("RenewalCallsWeComOncePerExpiringID", func(t *testing.T) {
		t.Parallel()
		w := startE2E(t, e2eOptions{Env: map[string]string{"PENDINGLINK_RENEW_INTERVAL": "200ms"}})
		p := w.fan()
		code, fr := w.registerFan(p)
		require.Equal(t, http.StatusCreated, code)
		w.wc.Clock.Advance(store.PendingIDLifetime - 6*24*time.Hour)
		w.waitFor("the renewer to re-register the expiring fan", func() bool { return w.calls.registrations(p.UnionID) >= 2 })

		// WeCom answered the same, still-live id, so the fan's expiry did
		// not move. Let the renewer run three more times.
		done := func() int { return len(w.jobs("renew", rivertype.JobStateCompleted)) }
		runs := done()
		w.waitFor("three more renew runs", func() bool { return done() >= runs+3 })
		w.waitFor("no registration in flight", func() bool {
			return len(w.jobs(pipeline.RegisterArgs{}.Kind(), rivertype.JobStateAvailable, rivertype.JobStateRunning,
				rivertype.JobStateRetryable, rivertype.JobStateScheduled, rivertype.JobStatePending)) == 0
		})
		require.Equal(t, []string{fr.PendingID}, pendingIDs(w.getFan(p.UnionID)), "WeCom returned the same id")
		require.Equal(t, 2, w.calls.registrations(p.UnionID),
			"a renewal that got back the id already held is not repeated on every renew run (each costs unionid_to_pending_id quota)")
	})
}

func pendingIDs(f apiclient.FanResponse) []string {
	var ids []string
	for _, p := range f.PendingIDs {
		ids = append(ids, p.PendingID)
	}
	return ids
}

func TestE2E_QuotaExhaustion(t *testing.T) {
	t.Parallel()
	const quota, fans = 5, 20
	w := startE2E(t, e2eOptions{
		PendingQuota: wecomtest.Quota{Hour: quota},
		Env:          map[string]string{"WECOM_PENDING_QUOTA_HOUR": fmt.Sprint(quota)},
	})
	var ps []wecomtest.Person
	for range fans {
		ps = append(ps, w.fan())
	}
	br := w.registerBatch(ps)
	require.Equal(t, apiclient.BatchResponse{Accepted: fans, Queued: fans}, br)

	settle := func(want int) {
		t.Helper()
		w.waitFor(fmt.Sprintf("%d fans registered and %d waiting", want, fans-want), func() bool {
			st := w.status()
			return st.Fans.Registered == int64(want) && st.Fans.Queued == int64(fans-want)
		})
		require.Zero(t, w.wc.Errcodes(wecomtest.APIUnionIDToPendingID)[wecom.CodeAPIFreqOutOfLimit], "no call WeCom would refuse is made")
		require.Equal(t, want, w.wc.Calls(wecomtest.APIUnionIDToPendingID))
	}
	settle(quota)

	for want := 2 * quota; want <= fans; want += quota {
		w.wc.Clock.Advance(time.Hour + 2*time.Minute) // the registrar looks at the quota every second
		settle(want)
	}
	for _, p := range ps {
		f := w.getFan(p.UnionID)
		pid, ok := w.wc.PendingIDOf(p)
		require.True(t, ok)
		require.Equal(t, pid, f.PendingID, "nothing lost")
	}
	_, refused := w.status().WeCom.Errors[fmt.Sprint(wecom.CodeAPIFreqOutOfLimit)]
	require.False(t, refused)
}

func TestE2E_WeComFaults(t *testing.T) {
	t.Parallel()
	const nFans, nOthers = 12, 4
	w := startE2E(t, e2eOptions{
		PendingForUnregistered: true, ClockRuns: true,
		Faults: wecomtest.Faults{
			ErrorRate: 0.2, Status5xxRate: 0.1, DropRate: 0.05, Seed: 7,
			APIs: []string{wecomtest.APIUnionIDToPendingID, wecomtest.APIExternalUserIDToPendingID},
		},
	})
	// A scripted burst on each API first, then the random faults.
	w.wc.FailNext(wecomtest.APIUnionIDToPendingID, wecomtest.Fault{Errcode: -1}, wecomtest.Fault{Errcode: -1}, wecomtest.Fault{Status: 503})
	w.wc.FailNext(wecomtest.APIExternalUserIDToPendingID, wecomtest.Fault{Errcode: -1}, wecomtest.Fault{Status: 502}, wecomtest.Fault{Errcode: -1})

	want, evs := w.burst(nFans, nOthers, func(int) string { return "staff-a" })
	half := len(evs) / 2
	w.wc.ExpireTokens() // WeCom revokes every token early
	w.sendAll(evs[:half])
	w.waitFor("the first half resolved", func() bool { return w.status().Events.Resolved >= int64(half) })
	w.wc.ExpireTokens()
	w.sendAll(evs[half:])

	w.waitFor("every link", func() bool { return w.status().Links.Total >= nFans })
	st := w.waitIdle()
	require.EqualValues(t, nFans, st.Links.Total)
	require.EqualValues(t, nFans, st.Links.Active)
	require.EqualValues(t, nFans+nOthers, st.Events.Received)
	require.Zero(t, st.Events.Failed, "%v", st.Events.FailureReasons)
	w.requireLinks(want)

	// The faults did happen.
	stats := w.wc.Stats()
	require.Positive(t, stats.Errcodes[wecomtest.APIExternalUserIDToPendingID][-1])
	require.Positive(t, stats.Errcodes[wecomtest.APIUnionIDToPendingID][-1])
	require.Positive(t, stats.Statuses[wecomtest.APIExternalUserIDToPendingID][502])
	require.Positive(t, stats.Statuses[wecomtest.APIUnionIDToPendingID][503])
	expired := 0
	for _, codes := range stats.Errcodes {
		expired += codes[wecom.CodeTokenExpired]
	}
	require.Positive(t, expired, "an early-expired token was refused and refreshed")
}

func TestE2E_RestartMidBurst(t *testing.T) {
	t.Parallel()
	const nFans, nOthers = 30, 10
	// A short shutdown timeout cancels the resolve jobs still waiting for
	// WeCom when the app stops.
	w := startE2E(t, e2eOptions{PendingForUnregistered: true, ClockRuns: true,
		Env: map[string]string{"PENDINGLINK_SHUTDOWN_TIMEOUT": "100ms"}})
	want, evs := w.burst(nFans, nOthers, func(i int) string { return []string{"staff-a", "staff-b"}[i%2] })
	// Slow WeCom answers keep the burst in flight when the app stops.
	w.wc.SetFaults(wecomtest.Faults{Latency: time.Second})
	w.sendAll(evs)
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	require.NoError(t, w.wc.Wait(ctx, func(st wecomtest.Stats) bool { return st.Calls[wecomtest.APIExternalUserIDToPendingID] >= 1 }),
		"a batch call is in flight")
	t.Logf("links made when the app was stopped: %d of %d", w.status().Links.Total, nFans)
	w.closeApp()
	w.wc.SetFaults(wecomtest.Faults{})

	w.startApp()
	w.sendAll(evs[:10]) // WeCom retries some it thinks failed
	w.waitFor("every link", func() bool { return w.status().Links.Total >= nFans })
	st := w.waitIdle()
	require.EqualValues(t, nFans, st.Links.Total)
	require.EqualValues(t, nFans+nOthers, st.Events.Received)
	require.EqualValues(t, 10, st.Events.Duplicate)
	require.Zero(t, st.Events.Failed)
	w.requireLinks(want)
}

// hookDelivery is one POST the webhook received.
type hookDelivery struct {
	status    int
	delivery  string
	signature string
	body      []byte
	msg       struct {
		ID         string     `json:"id"`
		Type       string     `json:"type"`
		OccurredAt time.Time  `json:"occurred_at"`
		Link       store.Link `json:"link"`
	}
}

func TestE2E_Webhook(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		seen []hookDelivery
	)
	hook := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		d := hookDelivery{delivery: r.Header.Get(pipeline.DeliveryHeader), signature: r.Header.Get(pipeline.SignatureHeader)}
		d.body, _ = io.ReadAll(r.Body)
		_ = json.Unmarshal(d.body, &d.msg)
		mu.Lock()
		d.status = http.StatusOK
		if len(seen) < 2 {
			d.status = http.StatusInternalServerError // the brand's system is down at first
		}
		seen = append(seen, d)
		mu.Unlock()
		rw.WriteHeader(d.status)
	}))
	t.Cleanup(hook.Close) // after the app stops
	deliveries := func() []hookDelivery {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
	secret := wecomtest.RandomToken(24)
	w := startE2E(t, e2eOptions{Env: map[string]string{"PENDINGLINK_WEBHOOK_URL": hook.URL, "PENDINGLINK_WEBHOOK_SECRET": secret}})

	p1, p2 := w.fan(), w.fan()
	for _, p := range []wecomtest.Person{p1, p2} {
		code, _ := w.registerFan(p)
		require.Equal(t, http.StatusCreated, code)
	}
	c1, ev1 := w.addCustomer(p1, "staff-a")
	_, ev2 := w.addCustomer(p2, "staff-b")
	w.sendAll([]wecom.Event{ev1, ev2})
	l1 := w.waitLinks(p1.UnionID, 1)[0]
	l2 := w.waitLinks(p2.UnionID, 1)[0]
	w.remove(c1, wecom.ChangeDelFollowUser)

	acked := func() []hookDelivery {
		var out []hookDelivery
		for _, d := range deliveries() {
			if d.status == http.StatusOK {
				out = append(out, d)
			}
		}
		return out
	}
	// River retries a failed delivery after 1 s, then 16 s: allow for both.
	w.waitForWithin(2*e2eTimeout, "3 acknowledged notifications", func() bool { return len(acked()) >= 3 })
	w.waitIdle()

	all := deliveries()
	require.Len(t, acked(), 3, "each notification is acknowledged once")
	require.Len(t, all, 5, "2 failures + 3 acknowledgements")
	ackedIDs := map[string]bool{}
	perLink := map[int64][]string{}
	for i, d := range all {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(d.body)
		require.Equal(t, "sha256="+hex.EncodeToString(m.Sum(nil)), d.signature, "delivery %d is signed", i)
		require.NotEmpty(t, d.msg.ID)
		require.Equal(t, d.msg.ID, d.delivery, "the idempotency id is in the header and the body")
		if d.status == http.StatusOK {
			require.False(t, ackedIDs[d.msg.ID], "acknowledged twice: %s", d.msg.ID)
			ackedIDs[d.msg.ID] = true
			perLink[d.msg.Link.ID] = append(perLink[d.msg.Link.ID], d.msg.Type)
			require.Equal(t, d.msg.Type == "link_created", d.msg.Link.Active)
		}
	}
	for _, d := range all[:2] {
		require.Equal(t, http.StatusInternalServerError, d.status)
		require.True(t, ackedIDs[d.msg.ID], "failed notification %s was retried until acknowledged", d.msg.ID)
	}
	require.Equal(t, map[int64][]string{l1.ID: {"link_created", "link_ended"}, l2.ID: {"link_created"}}, perLink)
	// In order per link: no attempt at link_ended before link_created was acknowledged.
	createdAcked := false
	for _, d := range all {
		if d.msg.Link.ID != l1.ID {
			continue
		}
		if d.msg.Type == "link_created" && d.status == http.StatusOK {
			createdAcked = true
		}
		if d.msg.Type == "link_ended" {
			require.True(t, createdAcked, "link_ended sent before link_created was acknowledged")
		}
	}
	for _, d := range all {
		if d.msg.Link.ID == l1.ID && d.msg.Type == "link_created" {
			require.Equal(t, p1.UnionID, d.msg.Link.UnionID)
			require.Equal(t, c1.ExternalUserID, d.msg.Link.ExternalUserID)
		}
	}
}

func TestE2E_API(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{ClockRuns: true})

	t.Run("Unauthorized", func(t *testing.T) {
		t.Parallel()
		w := w.in(t)
		routes := []struct{ method, path string }{
			{http.MethodGet, "/v1/status"},
			{http.MethodPost, "/v1/fans"},
			{http.MethodPost, "/v1/fans/batch"},
			{http.MethodGet, "/v1/fans/test-u1"},
			{http.MethodGet, "/v1/links"},
			{http.MethodGet, "/v1/customers/wwcorp/wmext"},
		}
		for _, r := range routes {
			for _, auth := range []string{"", "Bearer wrong-token-0123456789", "Basic " + w.admin, w.admin} {
				req, err := http.NewRequestWithContext(t.Context(), r.method, w.url(r.path), strings.NewReader(`{}`))
				require.NoError(t, err)
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				resp, err := w.api.Do(req)
				require.NoError(t, err)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s %s with %q", r.method, r.path, auth)
				require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Bearer")
				requireJSONError(t, body)
			}
		}
	})

	t.Run("BadRequests", func(t *testing.T) {
		t.Parallel()
		w := w.in(t)
		tooMany := make([]store.FanInput, apiclient.MaxFansPerBatch+1)
		for i := range tooMany {
			tooMany[i] = store.FanInput{UnionID: fmt.Sprintf("test-u-many%d", i), OpenID: "test-o"}
		}
		cases := []struct {
			name, method, path string
			body               any
		}{
			{"LimitZero", http.MethodGet, "/v1/links?limit=0", nil},
			{"LimitTooLarge", http.MethodGet, "/v1/links?limit=1001", nil},
			{"LimitNotANumber", http.MethodGet, "/v1/links?limit=ten", nil},
			{"SinceGarbage", http.MethodGet, "/v1/links?since=yesterday", nil},
			{"CursorGarbage", http.MethodGet, "/v1/links?cursor=abc", nil},
			{"CursorZero", http.MethodGet, "/v1/links?cursor=0", nil},
			{"BatchEmpty", http.MethodPost, "/v1/fans/batch", []store.FanInput{}},
			{"BatchTooLarge", http.MethodPost, "/v1/fans/batch", tooMany},
			{"BatchFanWithoutOpenID", http.MethodPost, "/v1/fans/batch", []store.FanInput{{UnionID: "test-u-ok", OpenID: "test-o-ok"}, {UnionID: "test-u-noopen"}}},
			{"BatchNotJSON", http.MethodPost, "/v1/fans/batch", json.RawMessage(`[{"unionid":`)},
			{"FanWithoutOpenID", http.MethodPost, "/v1/fans", store.FanInput{UnionID: "test-u-noopen"}},
			{"FanUnknownField", http.MethodPost, "/v1/fans", json.RawMessage(`{"unionid":"u","openid":"o","extra":1}`)},
			{"FanTooLong", http.MethodPost, "/v1/fans", store.FanInput{UnionID: strings.Repeat("u", 129), OpenID: "o"}},
		}
		for _, tc := range cases {
			code, body := w.do(tc.method, tc.path, tc.body, true)
			require.Equal(t, http.StatusBadRequest, code, "%s: %s", tc.name, body)
			requireJSONError(t, body)
		}
		// A rejected batch stores nothing, not even its valid fans.
		code, _ := w.do(http.MethodGet, "/v1/fans/test-u-ok", nil, true)
		require.Equal(t, http.StatusNotFound, code)
		code, _ = w.do(http.MethodGet, "/v1/fans/test-u-noopen", nil, true)
		require.Equal(t, http.StatusNotFound, code)
		code, body := w.do(http.MethodGet, "/v1/customers/wwnobody/wmnobody", nil, true)
		require.Equal(t, http.StatusNotFound, code)
		requireJSONError(t, body)
	})

	t.Run("CursorPagination", func(t *testing.T) {
		t.Parallel()
		w := w.in(t)
		const n, limit = 25, 7
		var fans []wecomtest.Person
		for range n {
			fans = append(fans, w.fan())
		}
		w.registerBatch(fans)
		w.waitFor("every fan registered", func() bool { return w.status().Fans.Registered >= n })
		var evs []wecom.Event
		for _, p := range fans {
			_, ev := w.addCustomer(p, "staff-a")
			evs = append(evs, ev)
		}
		w.sendAll(evs)
		w.waitFor("every link", func() bool { return w.status().Links.Total >= n })

		var (
			got    []store.Link
			cursor string
			pages  int
		)
		for {
			q := url.Values{"limit": {fmt.Sprint(limit)}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			var page apiclient.LinksResponse
			w.getJSON("/v1/links?"+q.Encode(), &page)
			require.LessOrEqual(t, len(page.Links), limit)
			got = append(got, page.Links...)
			pages++
			require.LessOrEqual(t, pages, n, "pagination ends")
			if page.NextCursor == "" {
				break
			}
			cursor = page.NextCursor
		}
		require.Len(t, got, n, "every link once")
		seen := map[int64]bool{}
		for i, l := range got {
			require.False(t, seen[l.ID], "link %d listed twice", l.ID)
			seen[l.ID] = true
			if i > 0 {
				require.Less(t, l.ID, got[i-1].ID, "newest first")
			}
		}
		for _, p := range fans {
			require.Len(t, w.linksOf(p.UnionID), 1)
		}
		// since keeps links matched at or after it (RFC 3339 has whole seconds).
		first, last := got[0].MatchedAt, got[0].MatchedAt
		for _, l := range got {
			first, last = minTime(first, l.MatchedAt), maxTime(last, l.MatchedAt)
		}
		require.Len(t, w.links(apiclient.LinkFilter{Since: first.Truncate(time.Second)}), n)
		require.Empty(t, w.links(apiclient.LinkFilter{Since: last.Truncate(time.Second).Add(time.Second)}))
	})
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// requireJSONError checks an error answer is {"error": "<message>"}.
func requireJSONError(t *testing.T, body []byte) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	require.NoError(t, json.Unmarshal(body, &e), "error body is JSON: %s", body)
	require.NotEmpty(t, e.Error, "error body names the problem: %s", body)
}

// TestE2E_SharedCorpsJoinReceiveIDAllowlist: with WECOM_DOWNSTREAM_CORP_IDS
// empty, a callback whose receive id is a dealer that shares the app is
// still accepted, because start-up adds list_app_share_info's corps to the
// allow-list; a corp that does not share the app is still refused.
func TestE2E_SharedCorpsJoinReceiveIDAllowlist(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{Env: map[string]string{"WECOM_DOWNSTREAM_CORP_IDS": ""}})
	require.Empty(t, w.cfg.DownstreamCorps)
	_, ev := w.addCustomer(w.fan(), w.dealers[0].Staff[0])

	send := func(receiveID string) int {
		sd, err := w.wc.NewSender(wecomtest.SenderConfig{
			URL: w.url(w.cfg.CallbackPath), Token: w.token, EncodingAESKey: w.aesKey,
			ReceiveID: receiveID, MaxAttempts: 1, HTTPClient: w.callbacks,
		})
		require.NoError(t, err)
		res, err := sd.Send(t.Context(), ev)
		if err != nil {
			require.ErrorIs(t, err, wecomtest.ErrNotDelivered)
		}
		return res.Status
	}
	require.Equal(t, http.StatusOK, send(w.dealers[0].CorpID), "a dealer sharing the app")
	require.Equal(t, http.StatusForbidden, send("wwtestnotsharing"), "a corp not sharing the app")
	require.Positive(t, w.wc.Calls(wecomtest.APIListAppShareInfo))
}

// TestE2E_ShutdownIsBoundedWhileWeComHangs: SIGTERM must keep its promise of
// PENDINGLINK_SHUTDOWN_TIMEOUT even when a WeCom call never returns; the
// work cut off is resumed at the next start.
func TestE2E_ShutdownIsBoundedWhileWeComHangs(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{Env: map[string]string{"PENDINGLINK_SHUTDOWN_TIMEOUT": "1s"}})
	held, release := w.calls.holdBatches()
	t.Cleanup(release)
	_, ev := w.addCustomer(w.fan(), "staff-a")
	w.send(ev)
	select {
	case <-held:
	case <-time.After(e2eTimeout):
		t.Fatal("the resolve job never called WeCom")
	}

	r := w.run
	r.mu.Lock()
	a := r.app
	r.app = nil
	r.mu.Unlock()
	closed := make(chan error, 1)
	go func() { closed <- a.close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(e2eTimeout):
		// Without a bound, close waits for the hanging call until release.
		t.Fatal("shutdown is still waiting for the hanging WeCom call")
	}
}
