package main

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// TestServe_KillNineWhileWeComIsSlowLinksEverythingAfterRestart: the
// binary is SIGKILLed in the middle of a burst of adds while WeCom answers
// slowly, so resolve jobs are running when it dies. After a restart (and
// WeCom's resends of what went unanswered) every customer is linked, and
// the test reports how long that took after the restart.
func TestServe_KillNineWhileWeComIsSlowLinksEverythingAfterRestart(t *testing.T) {
	t.Parallel()
	const (
		customers = 600
		senders   = 8
		killAt    = customers / 3
		latency   = 300 * time.Millisecond
	)
	w := newBurstWorld(t, filepath.Join(t.TempDir(), "kill.db"))
	wc := w.wc
	rig := newKillRig(t, wc, w.token, w.aesKey, w.env, senders)
	api := func(p *serveProc) *apiclient.Client {
		return &apiclient.Client{BaseURL: "http://" + p.addr, Token: w.admin, HTTPClient: rig.client}
	}
	waitStatus := func(p *serveProc, what string, cond func(apiclient.StatusResponse) bool) {
		t.Helper()
		waitForStatus(t, api(p), what, cond)
	}

	// Every customer is a registered fan, so every add makes a link.
	fans, events := w.customers(customers)
	first := rig.start()
	_, err := api(first).RegisterFans(t.Context(), fans)
	require.NoError(t, err)
	waitStatus(first, "every fan registered", func(st apiclient.StatusResponse) bool { return st.Fans.Registered == customers })

	// The burst, with WeCom slow: a third is acknowledged, then once a
	// batch call is in flight (a resolve job running for the next 300 ms)
	// the rest goes, and the first acknowledgement of it is the kill.
	wc.SetFaults(wecomtest.Faults{Latency: latency})
	sd := rig.sender(first, 1)
	statuses := make([]int, killAt, customers)
	inParallel(senders, killAt, func(i int) {
		res, err := sd.Send(t.Context(), events[i])
		assert.NoError(t, err, "delivery %d", i)
		statuses[i] = res.Status
	})
	require.Eventually(t, func() bool { return wc.Calls(wecomtest.APIExternalUserIDToPendingID) > 0 }, e2eTimeout, time.Millisecond,
		"a resolve job calls WeCom")
	statuses = append(statuses, rig.burstUntilKilled(first, events[killAt:], 1)...)
	unanswered := 0
	for _, s := range statuses {
		if s != http.StatusOK {
			unanswered++
		}
	}
	require.Positive(t, unanswered, "the kill did not interrupt the burst")

	// Restart; WeCom resends what got no 200.
	restarted := time.Now()
	second := rig.start()
	require.Contains(t, rig.logs.String(), "resumed jobs a stopped process left running",
		"resolve jobs were running at the kill, and are resumed at once")
	for i, err := range rig.resendUnanswered(second, events, statuses) {
		require.NoError(t, err, "resend of delivery %d", i)
	}
	waitStatus(second, "every customer linked", func(st apiclient.StatusResponse) bool { return st.Links.Active == customers })
	t.Logf("killed with %d of %d deliveries acknowledged (%d unanswered, WeCom latency %s); all %d customers linked %s after the restart",
		customers-unanswered, customers, unanswered, latency, customers, time.Since(restarted).Round(10*time.Millisecond))
	st, err := api(second).Status(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, customers, st.Events.Received, "each event stored once")
	require.EqualValues(t, customers, st.Links.Total, "no link twice")
	second.stop(t)
}
