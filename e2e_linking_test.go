package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
	w.wc.RemoveCustomer(c)
	w.send(w.wc.ContactEvent(c, wecom.ChangeDelFollowUser))
	w.waitFor("the link to end", func() bool { return !w.linksOf(p.UnionID)[0].Active })
}
