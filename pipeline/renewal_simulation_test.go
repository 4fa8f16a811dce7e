package pipeline_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// renewalRun is what a renewal simulation counted.
type renewalRun struct {
	firstCycle, secondCycle int // unionid_to_pending_id calls
	policy                  pipeline.RenewalPolicy
	live                    int // fans live at the end
}

// simulateRenewals registers fansPerDay fans a day for 10 days, then runs
// the registrar and the hourly renew job, with the default 7 days of
// RenewBefore and RenewEarly auto, for 195 simulated days against a fake
// WeCom that gives a live id back (reissue false) or issues a new id on
// every call. It counts the calls of the first 100 days and of the rest.
func simulateRenewals(t *testing.T, reissue bool, fansPerDay, learnAfter int) renewalRun {
	t.Helper()
	const days = 195
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	start := time.Date(2026, 1, 1, 0, 30, 0, 0, time.UTC)
	sim, wc, db := newSimulation(t, start, days, wecomtest.WithPendingReissue(reissue))
	client, co := sim.client(t, wc, nil)
	pl, err := pipeline.New(pipeline.Config{
		Store: db, WeCom: client, Coalescer: co, Now: sim.clock.Now, Sleep: sim.sleep,
		RegisterConcurrency: 1, RegisterPoll: time.Hour, LeaseRetry: forever, RenewLearnAfter: learnAfter,
	})
	require.NoError(t, err)

	renew := pipeline.WorkerOf[pipeline.RenewArgs](pl)
	var (
		run      renewalRun
		unionIDs []string
		failures []string
	)
	sim.hook = func(now time.Time) {
		elapsed := now.Sub(start)
		if day := int(elapsed / (24 * time.Hour)); day < 10 && elapsed%(24*time.Hour) == time.Hour {
			var fans []store.FanInput
			for range fansPerDay {
				p := wc.AddPerson()
				fans = append(fans, store.FanInput{UnionID: p.UnionID, OpenID: p.OpenID})
				unionIDs = append(unionIDs, p.UnionID)
			}
			if _, err := pl.RegisterBatch(ctx, fans); err != nil && len(failures) < 10 {
				failures = append(failures, fmt.Sprintf("register on day %d: %v", day, err))
			}
		}
		if elapsed == 100*24*time.Hour {
			run.firstCycle = wc.Calls(wecomtest.APIUnionIDToPendingID)
		}
		if err := renew.Work(ctx, &river.Job[pipeline.RenewArgs]{JobRow: &rivertype.JobRow{}}); err != nil && ctx.Err() == nil && len(failures) < 10 {
			failures = append(failures, fmt.Sprintf("renew on %s: %v", now, err))
		}
	}
	sim.run(t, ctx, cancel, pl)
	require.Empty(t, failures)

	run.secondCycle = wc.Calls(wecomtest.APIUnionIDToPendingID) - run.firstCycle
	run.policy, err = pl.RenewalPolicy(t.Context())
	require.NoError(t, err)
	for _, u := range unionIDs {
		if f, err := db.FindFan(t.Context(), u); err == nil && f.PendingID != "" {
			run.live++
		}
	}
	return run
}

// TestSimulation_RenewalLearnsSameID: against a WeCom that gives a live id
// back, auto renews early only until it has seen LearnAfter such answers;
// from then on every fan costs one call per 90 days, not two.
func TestSimulation_RenewalLearnsSameID(t *testing.T) {
	// Not parallel: the simulations run before the parallel tests and do
	// not share the cores with TestSimulation_QuotaPlanner.
	if testing.Short() || raceEnabled {
		t.Skip("simulates 195 days of renewals: run it without -race and -short (go test -run Simulation ./pipeline/)")
	}
	const perDay, learnAfter, fans = 4, 10, 40
	run := simulateRenewals(t, false, perDay, learnAfter)
	require.Equal(t, fans, run.secondCycle, "one call per fan and cycle: none 7 days early")
	require.False(t, run.policy.Early, "learnt: at expiry")
	require.Zero(t, run.policy.Observed.NewID)
	// The first cycle: the registrations, the early renewals that taught
	// it (whole days' worth: a day's fans are queued together), and one
	// renewal per fan at expiry.
	wasted := run.firstCycle - 2*fans
	require.GreaterOrEqual(t, wasted, learnAfter, "early renewals until learnt")
	require.LessOrEqual(t, wasted, learnAfter+perDay, "then no more")
	require.EqualValues(t, wasted, run.policy.Observed.SameID, "each counted once")
	require.Equal(t, fans, run.live, "every fan renewed")
}

// TestSimulation_RenewalKeepsEarlyOnNewID: against a WeCom that issues a
// new id on every call, auto keeps renewing early: one call per fan and
// cycle, 7 days before expiry, so no fan is ever without a live id.
func TestSimulation_RenewalKeepsEarlyOnNewID(t *testing.T) {
	// Not parallel, as TestSimulation_RenewalLearnsSameID.
	if testing.Short() || raceEnabled {
		t.Skip("simulates 195 days of renewals: run it without -race and -short (go test -run Simulation ./pipeline/)")
	}
	const fans = 40
	run := simulateRenewals(t, true, 4, 10)
	require.True(t, run.policy.Early)
	require.Zero(t, run.policy.Observed.SameID)
	require.Positive(t, run.policy.Observed.NewID)
	require.Equal(t, 2*fans, run.firstCycle, "registrations and one early renewal each")
	require.Equal(t, fans, run.secondCycle)
	require.Equal(t, fans, run.live)
}
