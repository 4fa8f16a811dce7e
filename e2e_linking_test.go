package main

import (
	"bytes"
	"fmt"
	"net/http"
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

// TestE2E_Outage: customers added while pendinglink is down (their
// callbacks lost for good) are linked after the restart, by the sweep a
// start after downtime begins by itself.
func TestE2E_Outage(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{Dealers: 2})
	p, q := w.fan(), w.fan()
	for _, f := range []wecomtest.Person{p, q} {
		code, _ := w.registerFan(f)
		require.Equal(t, http.StatusCreated, code)
	}
	w.waitIdle()
	w.closeApp()

	// While nobody listens, two dealers add p and one adds q; the callbacks
	// go nowhere.
	w.wc.AddCustomer(w.dealers[0], p, "staff-a")
	w.wc.AddCustomer(w.dealers[1], p, "staff-b")
	w.wc.AddCustomer(w.dealers[1], q, "staff-a")
	w.wc.Clock.Advance(10 * time.Minute)

	w.startApp()
	require.Len(t, w.waitLinks(p.UnionID, 2), 2)
	require.Len(t, w.waitLinks(q.UnionID, 1), 1)
	var st = w.status()
	w.waitFor("the sweep to finish", func() bool { st = w.status(); return !st.Reconcile.Running })
	require.Equal(t, "downtime", st.Reconcile.Reason)
	require.EqualValues(t, 2, st.Reconcile.Checked)
	require.EqualValues(t, 3, st.Reconcile.Linked)
	require.Zero(t, st.Reconcile.Remaining)
}

// TestE2E_ReconcileOnRequest: an operator's sweep (POST /v1/reconcile)
// links a customer whose add callback never arrived, without downtime.
func TestE2E_ReconcileOnRequest(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{})
	p := w.fan()
	code, _ := w.registerFan(p)
	require.Equal(t, http.StatusCreated, code)
	w.wc.AddCustomer(w.dealers[0], p, "staff-a") // its callback is lost
	w.wc.Clock.Advance(time.Second)              // the sweep starts after the fan's check at registration

	rr, err := w.client().Reconcile(t.Context(), time.Time{})
	require.NoError(t, err)
	require.True(t, rr.Started)
	require.EqualValues(t, 1, rr.Sweep.Remaining)
	again, err := w.client().Reconcile(t.Context(), time.Time{})
	require.NoError(t, err)
	require.False(t, again.Started, "sweeps do not stack")
	require.Equal(t, rr.Sweep.ID, again.Sweep.ID)

	l := w.waitLinks(p.UnionID, 1)[0]
	require.True(t, l.Active)
	// The customer is held by a staff member pendinglink never heard of;
	// that member's removal ends the link.
	c := wecomtest.Customer{Dealer: w.dealers[0], Person: p, Staff: "staff-a", ExternalUserID: l.ExternalUserID}
	w.remove(c, wecom.ChangeDelFollowUser)
	w.waitFor("the link to end", func() bool { return !w.linksOf(p.UnionID)[0].Active })
}

// TestE2E_Relationships runs every kind of relationship change through
// real callbacks, in both pending_id models WeCom may follow (§9 #17).
func TestE2E_Relationships(t *testing.T) {
	t.Parallel()
	for _, model := range []wecomtest.PendingModel{wecomtest.PendingWhenRegistered, wecomtest.PendingRegisteredFirst} {
		t.Run(model.String(), func(t *testing.T) {
			t.Parallel()
			w := startE2E(t, e2eOptions{Dealers: 2, PendingModel: model,
				Env: map[string]string{"PENDINGLINK_RECONCILE_INTERVAL": "200ms"}})
			t.Run("LastOfTwoFollowersEndsTheLink", func(t *testing.T) { testTwoFollowers(t, w.in(t)) })
			t.Run("TransferKeepsTheLink", func(t *testing.T) { testTransfer(t, w.in(t)) })
			t.Run("ChatCreateJoinLeaveDismiss", func(t *testing.T) { testChatLifecycle(t, w.in(t)) })
			t.Run("FanAtTwoDealers", func(t *testing.T) { testTwoDealers(t, w.in(t)) })
			t.Run("RemovalOvertakesLookup", func(t *testing.T) { testRemovalOvertakesLookup(t, w.in(t)) })
			t.Run("AddedBeforeInteractiveRegistration", func(t *testing.T) { testAddedBeforeRegistration(t, w.in(t), false) })
			t.Run("AddedBeforeBulkRegistration", func(t *testing.T) { testAddedBeforeRegistration(t, w.in(t), true) })
		})
	}
}

// registered registers a new fan interactively.
func (w *e2eWorld) registered() wecomtest.Person {
	w.t.Helper()
	p := w.fan()
	code, _ := w.registerFan(p)
	require.Equal(w.t, http.StatusCreated, code)
	return p
}

// settled waits until every job of kind has finished, at least n of them.
func (w *e2eWorld) settled(kind string, n int) {
	w.t.Helper()
	w.waitFor(fmt.Sprintf("%d %s job(s) done", n, kind), func() bool {
		open := w.jobs(kind, rivertype.JobStateAvailable, rivertype.JobStateRunning, rivertype.JobStateRetryable,
			rivertype.JobStateScheduled, rivertype.JobStatePending)
		return len(open) == 0 && len(w.jobs(kind)) >= n
	})
}

// link returns the fan's only link at corp.
func (w *e2eWorld) link(p wecomtest.Person, corpID string) store.Link {
	w.t.Helper()
	var out []store.Link
	for _, l := range w.linksOf(p.UnionID) {
		if l.CorpID == corpID {
			out = append(out, l)
		}
	}
	require.Len(w.t, out, 1)
	return out[0]
}

// waitEnded waits until the fan's link at corp has ended and returns it.
func (w *e2eWorld) waitEnded(p wecomtest.Person, corpID string) store.Link {
	w.t.Helper()
	var l store.Link
	w.waitFor("the link of "+p.UnionID+" to end", func() bool { l = w.link(p, corpID); return !l.Active })
	return l
}

// removeEnds removes c with changeType a second on and requires the fan's
// link at corp to end for that reason.
func (w *e2eWorld) removeEnds(p wecomtest.Person, corpID string, c wecomtest.Customer, changeType string) {
	w.t.Helper()
	w.wc.Clock.Advance(time.Second)
	w.remove(c, changeType)
	require.Equal(w.t, changeType, w.waitEnded(p, corpID).EndReason)
}

// linkedCustomer registers a fan, makes it staff's customer at the first
// dealer and waits for the link.
func (w *e2eWorld) linkedCustomer(staff string) (wecomtest.Person, wecomtest.Customer) {
	w.t.Helper()
	p := w.registered()
	c, ev := w.addCustomer(p, staff)
	w.send(ev)
	w.waitLinks(p.UnionID, 1)
	return p, c
}

func testTwoFollowers(t *testing.T, w *e2eWorld) {
	p, a := w.linkedCustomer("staff-a")
	corp := w.dealers[0].CorpID
	resolves := len(w.jobs(pipeline.ResolveArgs{}.Kind()))
	b, ev := w.addCustomer(p, "staff-b")
	w.send(ev)
	// Its lookup must answer before WeCom forgets staff-b below, or it
	// would wait out the grace of a fresh add.
	w.settled(pipeline.ResolveArgs{}.Kind(), resolves+1)
	ends := len(w.jobs(pipeline.EndLinkArgs{}.Kind()))

	w.wc.Clock.Advance(time.Second)
	w.remove(a, wecom.ChangeDelFollowUser)
	w.settled(pipeline.EndLinkArgs{}.Kind(), ends+1)
	require.True(t, w.link(p, corp).Active, "staff-b still follows")

	w.removeEnds(p, corp, b, wecom.ChangeDelExternalContact)
}

func testTransfer(t *testing.T, w *e2eWorld) {
	p, a := w.linkedCustomer("staff-a")
	corp := w.dealers[0].CorpID
	ends := len(w.jobs(pipeline.EndLinkArgs{}.Kind()))

	w.wc.Clock.Advance(time.Second)
	b, moved := w.wc.TransferCustomer(a, "staff-b")
	require.Equal(t, wecom.SourceDeleteByTransfer, moved.Source)
	w.send(moved)
	w.send(w.wc.TransferFailEvent(b, "staff-a", "customer_refused"))
	w.send(w.wc.ContactEvent(b, wecom.ChangeEditExternalContact))
	w.settled(pipeline.EndLinkArgs{}.Kind(), ends+1)
	require.True(t, w.link(p, corp).Active, "the colleague holds the customer")

	w.removeEnds(p, corp, b, wecom.ChangeDelFollowUser)
}

func testChatLifecycle(t *testing.T, w *e2eWorld) {
	p, q := w.registered(), w.registered()
	d := w.dealers[1]
	chat := w.wc.AddGroupChat(d, "staff-a", p)
	w.send(w.wc.CreateChatEvent(chat))
	require.Equal(t, chat.ID, w.waitLinks(p.UnionID, 1)[0].ChatID, "a member present at creation is linked")

	w.wc.Clock.Advance(time.Second)
	w.send(w.wc.AddChatMembers(chat, q))
	require.Equal(t, chat.ID, w.waitLinks(q.UnionID, 1)[0].ChatID)

	w.wc.Clock.Advance(time.Second)
	w.send(w.wc.RemoveChatMembers(chat, p))
	require.Equal(t, wecom.KindChatDelMember, w.waitEnded(p, d.CorpID).EndReason)
	require.True(t, w.link(q, d.CorpID).Active)

	w.wc.Clock.Advance(time.Second)
	w.send(w.wc.DismissChat(chat))
	require.Equal(t, wecom.KindChatDismiss, w.waitEnded(q, d.CorpID).EndReason)
}

func testTwoDealers(t *testing.T, w *e2eWorld) {
	p := w.registered()
	for _, d := range w.dealers {
		w.send(w.wc.ContactEvent(w.wc.AddCustomer(d, p, "staff-b"), wecom.ChangeAddExternalContact))
	}
	links := w.waitLinks(p.UnionID, 2)
	require.ElementsMatch(t, []string{w.dealers[0].CorpID, w.dealers[1].CorpID}, []string{links[0].CorpID, links[1].CorpID})
	for i, d := range w.dealers {
		require.Equal(t, w.wc.ExternalUserID(d, p), w.link(p, d.CorpID).ExternalUserID, "dealer %d", i)
	}
}

func testRemovalOvertakesLookup(t *testing.T, w *e2eWorld) {
	// WeCom is slow to answer the add's lookup; the removal's callback
	// arrives and is processed meanwhile. The lookup then answers (from
	// before the removal): the link must form ended, never active.
	p := w.registered()
	held, release := w.calls.holdBatches()
	defer release()
	c, ev := w.addCustomer(p, "staff-a")
	w.send(ev)
	<-held
	ends := len(w.jobs(pipeline.EndLinkArgs{}.Kind()))
	w.wc.Clock.Advance(time.Second)
	w.send(w.wc.ContactEvent(c, wecom.ChangeDelFollowUser))
	w.settled(pipeline.EndLinkArgs{}.Kind(), ends+1)
	release()
	w.settled(pipeline.ResolveArgs{}.Kind(), 1)
	l := w.waitLinks(p.UnionID, 1)[0]
	require.False(t, l.Active, "created ended")
	require.Equal(t, wecom.ChangeDelFollowUser, l.EndReason)
	w.wc.RemoveCustomer(c) // the world catches up
}

func testAddedBeforeRegistration(t *testing.T, w *e2eWorld, bulk bool) {
	p := w.fan()
	c, ev := w.addCustomer(p, "staff-a")
	w.send(ev)
	w.wc.Clock.Advance(time.Second)
	if bulk {
		require.EqualValues(t, 1, w.registerBatch([]wecomtest.Person{p}).Queued)
	} else {
		code, _ := w.registerFan(p)
		require.Equal(t, http.StatusCreated, code)
	}
	l := w.waitLinks(p.UnionID, 1)[0]
	require.True(t, l.Active)
	require.Equal(t, c.ExternalUserID, l.ExternalUserID)
}

// TestE2E_ConfigurationFaultWaitsAndHeals: WeCom answers 60020 (egress IP
// not trusted) until the operator fixes the console. Nothing fails for
// good: the API shows as blocked in /v1/status and the metrics, the work
// waits, one probe a minute checks, and once WeCom answers everything flows.
func TestE2E_ConfigurationFaultWaitsAndHeals(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{})
	p := w.registered()
	const msg = "not allow to access from your ip, from ip: 203.0.113.7"
	w.wc.FailNext(wecomtest.APIExternalUserIDToPendingID, wecomtest.Fault{Errcode: wecom.CodeIPNotAllowed, Msg: msg})
	_, ev := w.addCustomer(p, "staff-a")
	w.send(ev)

	var st apiclient.StatusResponse
	w.waitFor("the API to show as blocked", func() bool { st = w.status(); return len(st.WeCom.Blocked) == 1 })
	b := st.WeCom.Blocked[0]
	require.Equal(t, wecomtest.APIExternalUserIDToPendingID, b.API)
	require.Equal(t, wecom.CodeIPNotAllowed, b.Code)
	require.Contains(t, b.Msg, "203.0.113.7", "the egress IP to trust")
	require.Contains(t, b.Fix, "企业可信IP")
	w.waitFor("the resolve to wait", func() bool {
		return len(w.jobs(pipeline.ResolveArgs{}.Kind(), rivertype.JobStateScheduled)) == 1
	})
	require.Zero(t, w.status().Events.Failed, "a configuration fault fails nothing")
	require.Contains(t, w.metrics(), "pendinglink_wecom_blocked_apis 1")

	// The operator fixes the console; a minute later the probe goes through.
	w.wc.Clock.Advance(wecom.MinProbeInterval)
	for _, j := range w.jobs(pipeline.ResolveArgs{}.Kind(), rivertype.JobStateScheduled) {
		_, err := w.db().River().JobRetry(t.Context(), j.ID) // River's snooze runs on the real clock
		require.NoError(t, err)
	}
	require.True(t, w.waitLinks(p.UnionID, 1)[0].Active)
	require.Empty(t, w.status().WeCom.Blocked)
	require.Contains(t, w.metrics(), "pendinglink_wecom_blocked_apis 0")
}

// metrics returns the /metrics page.
func (w *e2eWorld) metrics() string {
	w.t.Helper()
	code, body := w.do(http.MethodGet, "/metrics", nil, false)
	require.Equal(w.t, http.StatusOK, code)
	return string(body)
}

// TestE2E_RetryRedrivesWhatFailed: an event and a fan failed for good
// (WeCom refused them) are re-driven with "pendinglink retry" once the
// cause is fixed, and link.
func TestE2E_RetryRedrivesWhatFailed(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{})
	cli := func(args ...string) string {
		var out, errs bytes.Buffer
		getenv := func(k string) string {
			return map[string]string{"PENDINGLINK_ADMIN_TOKEN": w.admin, "PENDINGLINK_URL": w.url("")}[k]
		}
		require.NoError(t, run(t.Context(), args, getenv, &out, &errs), errs.String())
		return out.String()
	}

	// 50002: the staff member was outside the app's visible range.
	p := w.registered()
	w.wc.FailNext(wecomtest.APIExternalUserIDToPendingID, wecomtest.Fault{Errcode: 50002})
	_, ev := w.addCustomer(p, "staff-a")
	w.send(ev)
	w.waitFor("the event to fail", func() bool { return w.status().Events.Failed == 1 })
	require.Equal(t, "1 events match (dry run: nothing changed)\n", cli("retry", "events", "--reason", "50002", "--dry-run"))
	require.Equal(t, "1 events re-queued\n", cli("retry", "events", "--reason", "50002"))
	require.True(t, w.waitLinks(p.UnionID, 1)[0].Active)
	require.Zero(t, w.status().Events.Failed)

	// 610016 for a bulk registration: the corp was not certified yet.
	q := w.fan()
	w.wc.FailNext(wecomtest.APIUnionIDToPendingID, wecomtest.Fault{Errcode: 610016})
	require.EqualValues(t, 1, w.registerBatch([]wecomtest.Person{q}).Queued)
	w.waitFor("the fan to fail", func() bool { return w.getFan(q.UnionID).State == store.FanFailed })
	require.Equal(t, "1 fans re-queued\n", cli("retry", "fans"))
	w.waitFor("the fan to register", func() bool { return w.getFan(q.UnionID).PendingID != "" })
}

// TestE2E_AllowlistHealsWhenWeComWasDownAtStart: list_app_share_info fails
// at start-up; the first authentic callback of a dealer then refreshes the
// allow-list and is stored, instead of being refused until the next day.
func TestE2E_AllowlistHealsWhenWeComWasDownAtStart(t *testing.T) {
	t.Parallel()
	// Every start-up attempt (the client retries) gets a 503.
	faults := make([]wecomtest.Fault, 10)
	for i := range faults {
		faults[i] = wecomtest.Fault{Status: http.StatusServiceUnavailable}
	}
	w := startE2E(t, e2eOptions{Env: map[string]string{"WECOM_DOWNSTREAM_CORP_IDS": ""},
		BeforeStart: func(s *wecomtest.Server) { s.FailNext(wecomtest.APIListAppShareInfo, faults...) }})
	p := w.registered()
	_, ev := w.addCustomer(p, "staff-a")
	w.send(ev)
	require.True(t, w.waitLinks(p.UnionID, 1)[0].Active)
}

// TestE2E_QuotaForecast: GET /v1/quota shows the windows, the live fans,
// what the quota can keep live, and when the queued registrations finish.
func TestE2E_QuotaForecast(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{Env: map[string]string{
		"WECOM_PENDING_QUOTA_HOUR": "5", "WECOM_PENDING_QUOTA_DAY": "100", "WECOM_PENDING_QUOTA_MONTH": "1000",
		"PENDINGLINK_BACKFILL_EXISTING": "false",
	}})
	// 8 fans of priority 90 and 12 of the default 50: the hour's 5 calls
	// go to valued fans, 3 of them still wait ahead of the 12.
	fans := make([]store.FanInput, 20)
	for i := range fans {
		p := w.fan()
		fans[i] = store.FanInput{UnionID: p.UnionID, OpenID: p.OpenID}
		if i < 8 {
			fans[i].Priority = 90
		}
	}
	res, err := w.client().RegisterFans(t.Context(), fans)
	require.NoError(t, err)
	require.EqualValues(t, 20, res.Queued)
	w.waitFor("the hour's 5 registrations done and 15 waiting", func() bool {
		st := w.status()
		return st.Fans.Registered == 5 && st.Fans.Queued == 15
	})

	q, err := w.client().Quota(t.Context())
	require.NoError(t, err)
	require.Equal(t, wecomtest.APIUnionIDToPendingID, q.APIs[0].API)
	require.Equal(t, apiclient.QuotaWindow{Window: "1h0m0s", Used: 5, Limit: 5}, q.APIs[0].Windows[0])
	require.EqualValues(t, 5, q.LivePendingIDs)
	require.EqualValues(t, 1000*83/31, q.SustainableLiveFans, "the month window: 1,000 per 31 days, each fan renewed every 83 days")
	require.Equal(t, apiclient.QuotaRenewal{Mode: "auto", Policy: apiclient.RenewalEarly, LearnAfter: 20}, q.Renewal,
		"renewals start early until WeCom is seen giving live ids back")
	require.Len(t, q.Registrations, 3)
	require.Equal(t, "interactive", q.Registrations[0].Name)
	require.Zero(t, q.Registrations[0].Count)
	require.Nil(t, q.Registrations[0].DoneAt)
	bulk := q.Registrations[1]
	require.Equal(t, "bulk", bulk.Name)
	require.EqualValues(t, 15, bulk.Count)
	require.NotNil(t, bulk.DoneAt)
	require.WithinDuration(t, w.wc.Clock.Now().Add(3*time.Hour), *bulk.DoneAt, 5*time.Minute, "15 more at 5 an hour")

	require.Len(t, q.ByPriority, 2)
	require.Equal(t, 90, q.ByPriority[0].Priority)
	require.EqualValues(t, 3, q.ByPriority[0].Count, "the 5 calls went to valued fans")
	require.WithinDuration(t, w.wc.Clock.Now().Add(36*time.Minute), *q.ByPriority[0].DoneAt, 5*time.Minute, "3 at 5 an hour")
	require.Equal(t, 50, q.ByPriority[1].Priority)
	require.EqualValues(t, 12, q.ByPriority[1].Count)
	require.Equal(t, *bulk.DoneAt, *q.ByPriority[1].DoneAt, "the last priority ends the bulk backlog")
}

// TestE2E_FanPriority: a fan's priority is given at registration, changed
// with PATCH, and orders the registration queue.
func TestE2E_FanPriority(t *testing.T) {
	t.Parallel()
	w := startE2E(t, e2eOptions{Env: map[string]string{"WECOM_PENDING_QUOTA_HOUR": "1", "PENDINGLINK_BACKFILL_EXISTING": "false"}})
	vip, plain, low := w.fan(), w.fan(), w.fan()
	blocker := w.fan() // takes the hour's one call, so the others wait queued
	code, _ := w.registerFan(blocker)
	require.Equal(t, http.StatusCreated, code)
	res, err := w.client().RegisterFans(t.Context(), []store.FanInput{
		{UnionID: low.UnionID, OpenID: low.OpenID, Priority: 5},
		{UnionID: plain.UnionID, OpenID: plain.OpenID},
		{UnionID: vip.UnionID, OpenID: vip.OpenID, Priority: 95},
	})
	require.NoError(t, err)
	require.EqualValues(t, 3, res.Queued)
	require.Equal(t, []string{vip.UnionID, plain.UnionID, low.UnionID}, w.queued(), "the valued fan goes first")

	require.Equal(t, 95, w.getFan(vip.UnionID).Priority)
	fr, err := w.client().UpdateFan(t.Context(), low.UnionID, apiclient.FanPatch{Priority: new(60)})
	require.NoError(t, err)
	require.Equal(t, 60, fr.Priority)
	require.Equal(t, 60, w.getFan(low.UnionID).Priority)
	require.Equal(t, []string{vip.UnionID, low.UnionID, plain.UnionID}, w.queued(), "moved up at once")

	_, err = w.client().UpdateFan(t.Context(), low.UnionID, apiclient.FanPatch{Priority: new(0)})
	var ae *apiclient.Error
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusBadRequest, ae.Status)
	_, err = w.client().UpdateFan(t.Context(), "test-nobody", apiclient.FanPatch{Priority: new(10)})
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusNotFound, ae.Status)
}
