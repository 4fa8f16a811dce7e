package handlers_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/internal/fakeclock"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/pipeline/pipelinetest"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
	"github.com/pendinglink/pendinglink/wecom"
)

// gaugeSourceFunc is a handlers.GaugeSource whose answer a test chooses.
type gaugeSourceFunc struct {
	GaugesFunc func(ctx context.Context) (pipeline.Gauges, error)
	calls      int
}

func (g *gaugeSourceFunc) Gauges(ctx context.Context) (pipeline.Gauges, error) {
	g.calls++
	return g.GaugesFunc(ctx)
}

// gaugesOf is a source that always answers g.
func gaugesOf(g pipeline.Gauges) *gaugeSourceFunc {
	return &gaugeSourceFunc{GaugesFunc: func(context.Context) (pipeline.Gauges, error) { return g, nil }}
}

// metricsBundle is a server whose /metrics holds the gauges of src and the
// WeCom counters of wc, read through reg.
type metricsBundle struct {
	reg   *prometheus.Registry
	clock *fakeclock.Clock
}

func setupMetrics(t *testing.T, src handlers.GaugeSource, wc *pipelinetest.FakeWeCom) *metricsBundle {
	t.Helper()
	db := storetest.MustOpen(t, store.Config{Jobs: pipeline.Policy{}})
	b := &metricsBundle{reg: prometheus.NewRegistry(), clock: fakeclock.New(apiNow)}
	cfg := testConfig(t, db, handlers.ReceiveIDAllowlist, b.reg)
	cfg.Now, cfg.Gauges, cfg.GaugesMaxAge = b.clock.Now, src, time.Minute
	if wc != nil {
		cfg.WeCom = wc
	}
	_, err := handlers.New(cfg)
	require.NoError(t, err)
	return b
}

func TestMetrics_Gauges(t *testing.T) {
	t.Parallel()

	t.Run("ExportsTheFigures", func(t *testing.T) {
		t.Parallel()
		g := pipeline.Gauges{
			Status: store.PipelineStatus{EventsResolved: 7, EventsFailed: 2, FansRegistered: 10, FansValid: 9,
				FansExpired: 1, FansExpiring: 3, LinksTotal: 5, LinksActive: 4},
			ExpiringWithinDay: 1,
			Jobs:              []store.JobCount{{Queue: "resolve", State: "available", Count: 12}, {Queue: "register", State: "discarded"}},
			Forecast: pipeline.Forecast{
				Pending: []quota.Usage{{Length: time.Hour, Limit: 100, Used: 40},
					{Length: 31 * 24 * time.Hour, Limit: 1000, Used: 1000, External: true, SpentUntil: apiNow.Add(time.Hour)}},
				Existing:     []quota.Usage{{Length: 24 * time.Hour, Limit: 50, Used: 5, External: true, SpentUntil: apiNow.Add(-time.Second)}},
				Sustainable:  2677,
				OverCapacity: 3,
				Renewal:      pipeline.RenewalPolicy{Early: true},
				Registrations: []pipeline.BacklogItem{{Name: "interactive"},
					{Name: "bulk", Count: 500, Done: apiNow.Add(90 * time.Minute)}},
				Checks: pipeline.BacklogItem{Name: "checks", Count: 4, Done: apiNow.Add(time.Minute)},
			},
			Webhook: &store.OutboxStatus{Undelivered: 6, Failing: 1, Oldest: apiNow.Add(-10 * time.Minute)},
		}
		b := setupMetrics(t, gaugesOf(g), nil)
		err := testutil.GatherAndCompare(b.reg, strings.NewReader(`
# HELP pendinglink_backlog Work waiting for WeCom quota: registrations (interactive, bulk, renewal) and existing-customer checks.
# TYPE pendinglink_backlog gauge
pendinglink_backlog{work="bulk"} 500
pendinglink_backlog{work="checks"} 4
pendinglink_backlog{work="interactive"} 0
# HELP pendinglink_backlog_done_seconds Seconds from now until the quota lets this work and everything ahead of it finish (0 when none waits).
# TYPE pendinglink_backlog_done_seconds gauge
pendinglink_backlog_done_seconds{work="bulk"} 5400
pendinglink_backlog_done_seconds{work="checks"} 60
pendinglink_backlog_done_seconds{work="interactive"} 0
# HELP pendinglink_database_up 1 if the last read of the database figures below succeeded, 0 if it failed.
# TYPE pendinglink_database_up gauge
pendinglink_database_up 1
# HELP pendinglink_fans_expiring Fans whose newest pending_id is live and expires within the given time.
# TYPE pendinglink_fans_expiring gauge
pendinglink_fans_expiring{within="1d"} 1
pendinglink_fans_expiring{within="7d"} 3
# HELP pendinglink_jobs River jobs by queue and state (unfinished states and discarded).
# TYPE pendinglink_jobs gauge
pendinglink_jobs{queue="register",state="discarded"} 0
pendinglink_jobs{queue="resolve",state="available"} 12
# HELP pendinglink_links Links by state (active, ended).
# TYPE pendinglink_links gauge
pendinglink_links{state="active"} 4
pendinglink_links{state="ended"} 1
# HELP pendinglink_quota_spent_by_others 1 while WeCom's 45009 answers show another app of the corp has spent the window.
# TYPE pendinglink_quota_spent_by_others gauge
pendinglink_quota_spent_by_others{api="corpgroup/unionid_to_external_userid",window="1d"} 0
pendinglink_quota_spent_by_others{api="corpgroup/unionid_to_pending_id",window="1h"} 0
pendinglink_quota_spent_by_others{api="corpgroup/unionid_to_pending_id",window="31d"} 1
# HELP pendinglink_quota_used Calls counted in the rolling quota window.
# TYPE pendinglink_quota_used gauge
pendinglink_quota_used{api="corpgroup/unionid_to_external_userid",window="1d"} 5
pendinglink_quota_used{api="corpgroup/unionid_to_pending_id",window="1h"} 40
pendinglink_quota_used{api="corpgroup/unionid_to_pending_id",window="31d"} 1000
# HELP pendinglink_quota_over_capacity_fans Live and queued fans the quota cannot keep live: the lowest-priority ones will expire.
# TYPE pendinglink_quota_over_capacity_fans gauge
pendinglink_quota_over_capacity_fans 3
# HELP pendinglink_renewal_early 1 while renewals start PENDINGLINK_RENEW_BEFORE ahead of expiry, 0 while they start at expiry (PENDINGLINK_RENEW_EARLY).
# TYPE pendinglink_renewal_early gauge
pendinglink_renewal_early 1
# HELP pendinglink_webhook_failing Undelivered webhook notifications whose last attempt failed.
# TYPE pendinglink_webhook_failing gauge
pendinglink_webhook_failing 1
# HELP pendinglink_webhook_oldest_undelivered_seconds Age of the oldest undelivered webhook notification (0 when none waits).
# TYPE pendinglink_webhook_oldest_undelivered_seconds gauge
pendinglink_webhook_oldest_undelivered_seconds 600
`), "pendinglink_backlog", "pendinglink_backlog_done_seconds", "pendinglink_database_up", "pendinglink_fans_expiring",
			"pendinglink_jobs", "pendinglink_links", "pendinglink_quota_spent_by_others", "pendinglink_quota_used",
			"pendinglink_quota_over_capacity_fans", "pendinglink_renewal_early", "pendinglink_webhook_failing", "pendinglink_webhook_oldest_undelivered_seconds")
		require.NoError(t, err)
		require.InDelta(t, 2, gathered(t, b.reg, "pendinglink_events", "state", "failed"), 0)
		require.InDelta(t, 9, gathered(t, b.reg, "pendinglink_fans", "state", "live"), 0)
		require.InDelta(t, 1000, gathered(t, b.reg, "pendinglink_quota_limit", "window", "31d"), 0)
	})

	t.Run("NoWebhookNoWebhookSeries", func(t *testing.T) {
		t.Parallel()
		b := setupMetrics(t, gaugesOf(pipeline.Gauges{}), nil)
		n, err := testutil.GatherAndCount(b.reg, "pendinglink_webhook_undelivered", "pendinglink_webhook_failing")
		require.NoError(t, err)
		require.Zero(t, n, "without a webhook, undelivered notifications are expected and not reported")
	})

	t.Run("ReusesFiguresWithinMaxAge", func(t *testing.T) {
		t.Parallel()
		src := gaugesOf(pipeline.Gauges{})
		b := setupMetrics(t, src, nil)
		_, err := b.reg.Gather()
		require.NoError(t, err)
		b.clock.Advance(59 * time.Second)
		_, err = b.reg.Gather()
		require.NoError(t, err)
		require.Equal(t, 1, src.calls, "a second scrape within GaugesMaxAge reuses the figures")
		b.clock.Advance(time.Second)
		_, err = b.reg.Gather()
		require.NoError(t, err)
		require.Equal(t, 2, src.calls)
	})

	t.Run("DatabaseDownReportsUpZero", func(t *testing.T) {
		t.Parallel()
		b := setupMetrics(t, &gaugeSourceFunc{GaugesFunc: func(context.Context) (pipeline.Gauges, error) {
			return pipeline.Gauges{}, errors.New("database is locked")
		}}, nil)
		require.InDelta(t, 0, gathered(t, b.reg, "pendinglink_database_up", "", ""), 0)
		n, err := testutil.GatherAndCount(b.reg, "pendinglink_events", "pendinglink_jobs")
		require.NoError(t, err)
		require.Zero(t, n, "no stale or invented figures when the read failed")
	})

	t.Run("WeComCounters", func(t *testing.T) {
		t.Parallel()
		wc := &pipelinetest.FakeWeCom{StatsFunc: func() wecom.Stats {
			return wecom.Stats{Calls: map[string]int64{wecom.APIUnionIDToPendingID: 9}, Errors: map[int]int64{60020: 2},
				TransportErrors: 3, QuotaRejected: 4, Blocked: []wecom.Blocked{{API: wecom.APIUnionIDToPendingID, Code: 60020}}}
		}}
		b := setupMetrics(t, gaugesOf(pipeline.Gauges{}), wc)
		require.InDelta(t, 9, gathered(t, b.reg, "pendinglink_wecom_calls_total", "api", wecom.APIUnionIDToPendingID), 0)
		require.InDelta(t, 2, gathered(t, b.reg, "pendinglink_wecom_errors_total", "errcode", "60020"), 0)
		require.InDelta(t, 3, gathered(t, b.reg, "pendinglink_wecom_transport_errors_total", "", ""), 0)
		require.InDelta(t, 4, gathered(t, b.reg, "pendinglink_wecom_quota_rejected_total", "", ""), 0)
		require.InDelta(t, 1, gathered(t, b.reg, "pendinglink_wecom_blocked_apis", "", ""), 0)
	})
}

// gathered returns the value of the one series of name whose label has the
// given value (any series when label is ""), failing if there is none.
func gathered(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				match = match || (lp.GetName() == label && lp.GetValue() == value)
			}
			if !match {
				continue
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}
