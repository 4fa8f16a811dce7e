package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

const (
	alertsFile    = "deploy/prometheus/alerts.yaml"
	dashboardFile = "deploy/grafana/pendinglink.json"
)

// TestDeploy_AlertsAndDashboard: the alerting rules and the Grafana
// dashboard parse, and every metric their expressions name is one that a
// running pendinglink exports on /metrics.
func TestDeploy_AlertsAndDashboard(t *testing.T) {
	t.Parallel()
	exported := exportedMetrics(t)
	pql := parser.NewParser(parser.Options{})

	t.Run("AlertsUseExportedMetrics", func(t *testing.T) {
		groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, pql, slog.New(slog.DiscardHandler))
		require.Empty(t, errs, "%s does not parse", alertsFile)
		var n int
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				n++
				require.NotEmpty(t, r.Alert, "every rule is an alert")
				require.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], "%s: severity", r.Alert)
				require.NotEmpty(t, r.Annotations["summary"], "%s: summary", r.Alert)
				expr, err := pql.ParseExpr(r.Expr)
				require.NoError(t, err, "%s", r.Alert)
				requireExported(t, exported, r.Alert, expr)
			}
		}
		require.GreaterOrEqual(t, n, 10)
	})

	t.Run("DashboardQueriesUseExportedMetrics", func(t *testing.T) {
		raw, err := os.ReadFile(dashboardFile)
		require.NoError(t, err)
		var dash struct {
			Title  string `json:"title"`
			Panels []struct {
				Title   string `json:"title"`
				Type    string `json:"type"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		require.NoError(t, json.Unmarshal(raw, &dash), "%s is not JSON", dashboardFile)
		require.NotEmpty(t, dash.Title)
		// Grafana replaces its interval variables before Prometheus sees a query.
		vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")
		var queries int
		for _, p := range dash.Panels {
			if p.Type == "row" {
				continue
			}
			require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
			for _, tg := range p.Targets {
				queries++
				expr, err := pql.ParseExpr(vars.Replace(tg.Expr))
				require.NoError(t, err, "panel %q: %s", p.Title, tg.Expr)
				requireExported(t, exported, "panel "+p.Title, expr)
			}
		}
		require.GreaterOrEqual(t, queries, 20)
	})

	t.Run("RunbookNamesEveryAlert", func(t *testing.T) {
		readme, err := os.ReadFile("README.md")
		require.NoError(t, err)
		_, section, ok := strings.Cut(string(readme), "### Alerts and runbook")
		require.True(t, ok, "README.md has no \"### Alerts and runbook\" section")
		section, _, _ = strings.Cut(section, "\n## ")
		groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, pql, slog.New(slog.DiscardHandler))
		require.Empty(t, errs)
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				require.Contains(t, section, "`"+r.Alert+"`", "README's runbook has no line for %s", r.Alert)
			}
		}
	})
}

// requireExported fails unless every metric expr selects is exported.
func requireExported(t *testing.T, exported map[string]bool, where string, expr parser.Expr) {
	t.Helper()
	names := selectedMetrics(expr)
	require.NotEmpty(t, names, "%s selects no metric by name", where)
	for _, name := range names {
		require.True(t, exported[name], "%s uses %s, which pendinglink does not export", where, name)
	}
}

// selectedMetrics lists the metric names of expr's selectors.
func selectedMetrics(expr parser.Expr) []string {
	var names []string
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		names = append(names, name)
		return nil
	})
	return names
}

// exportedMetrics runs pendinglink with a webhook, links a fan, lets WeCom
// refuse another (so every labelled family has a series), scrapes /metrics
// and returns the names of the series Prometheus would store.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	w := startE2E(t, e2eOptions{Env: map[string]string{
		"PENDINGLINK_WEBHOOK_URL": hook.URL, "PENDINGLINK_WEBHOOK_SECRET": "test-webhook-secret",
	}})
	p := w.fan()
	code, _ := w.registerFan(p)
	require.Equal(t, http.StatusCreated, code)
	_, ev := w.addCustomer(p, "staff-a")
	w.send(ev)
	w.waitLinks(p.UnionID, 1)
	w.registerBatch([]wecomtest.Person{{UnionID: "test-unobody", OpenID: "o-unobody"}})
	w.waitFor("WeCom's refusal of the unknown fan", func() bool {
		f, err := w.db().FindFan(t.Context(), "test-unobody")
		return err == nil && f.State == store.FanFailed
	})

	resp, err := w.api.Get(w.url("/metrics"))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	tp := expfmt.NewTextParser(model.UTF8Validation)
	families, err := tp.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	out := map[string]bool{}
	for name, mf := range families {
		if len(mf.GetMetric()) == 0 {
			continue
		}
		out[name] = true
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			out[name+"_sum"], out[name+"_count"] = true, true
		}
	}
	// The families the rules and panels rely on must be among them: a
	// scrape that lost the database gauges or the WeCom counters would
	// make the checks above vacuous for those names.
	var ours []string
	for name := range out {
		if strings.HasPrefix(name, "pendinglink_") {
			ours = append(ours, name)
		}
	}
	sort.Strings(ours)
	for _, want := range []string{"pendinglink_database_up", "pendinglink_jobs", "pendinglink_webhook_failing",
		"pendinglink_wecom_errors_total", "pendinglink_events_stored_total", "go_goroutines", "process_resident_memory_bytes"} {
		require.True(t, out[want], "/metrics lacks %s; it has %v", want, ours)
	}
	return out
}

// TestDeploy_AlertsFire evaluates some alerts' expressions on recorded
// series with Prometheus's own engine: each fires on its condition and stays
// quiet otherwise. Two instances report the same database gauges, which the
// rules must not add up.
func TestDeploy_AlertsFire(t *testing.T) {
	t.Parallel()
	pql := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, pql, slog.New(slog.DiscardHandler))
	require.Empty(t, errs)
	exprs := map[string]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			exprs[r.Alert] = r.Expr
		}
	}
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	for _, tc := range []struct {
		name, alert string
		series      []string // one a minute from 0, in PromQL's series notation
		want        map[string]float64
	}{
		{"FansExpiringUnrenewedFires", "PendinglinkFansExpiringUnrenewed", []string{
			`pendinglink_fans_expiring{within="1d", instance="a"} 3x30`,
			`pendinglink_fans_expiring{within="1d", instance="b"} 3x30`,
			`pendinglink_quota_over_capacity_fans{instance="a"} 0x30`,
		}, map[string]float64{"{}": 3}},
		{"FansExpiringUnrenewedQuietWhenRenewingAtExpiry", "PendinglinkFansExpiringUnrenewed", []string{
			`pendinglink_fans_expiring{within="1d", instance="a"} 3x30`,
			`pendinglink_quota_over_capacity_fans{instance="a"} 0x30`,
			`pendinglink_renewal_early{instance="a"} 0x30`,
		}, nil},
		{"FansExpiringUnrenewedFiresWhenRenewingEarly", "PendinglinkFansExpiringUnrenewed", []string{
			`pendinglink_fans_expiring{within="1d", instance="a"} 3x30`,
			`pendinglink_quota_over_capacity_fans{instance="a"} 0x30`,
			`pendinglink_renewal_early{instance="a"} 1x30`,
		}, map[string]float64{"{}": 3}},
		{"FansExpiringUnrenewedQuietOverCapacity", "PendinglinkFansExpiringUnrenewed", []string{
			`pendinglink_fans_expiring{within="1d", instance="a"} 3x30`,
			`pendinglink_quota_over_capacity_fans{instance="a"} 5x30`,
		}, nil},
		{"RenewalsShortOfQuotaFires", "PendinglinkRenewalsShortOfQuota", []string{
			`pendinglink_fans_expiring_unrenewed{instance="a"} 40x90`,
			`pendinglink_fans_expiring_unrenewed{instance="b"} 40x90`,
			`pendinglink_quota_over_capacity_fans{instance="a"} 0x90`,
		}, map[string]float64{"{}": 40}},
		{"RenewalsShortOfQuotaQuietOverCapacity", "PendinglinkRenewalsShortOfQuota", []string{
			`pendinglink_fans_expiring_unrenewed{instance="a"} 40x90`,
			`pendinglink_quota_over_capacity_fans{instance="a"} 5x90`,
		}, nil},
		{"CallbacksRejectedFiresWithNothingStored", "PendinglinkCallbacksRejected", []string{
			`pendinglink_callbacks_rejected_total{reason="signature", instance="a"} 0+60x30`,
			`pendinglink_callbacks_rejected_total{reason="busy", instance="a"} 0x30`,
			`pendinglink_events_duplicate_total{instance="a"} 0x30`,
		}, map[string]float64{"{}": 1}},
		{"CallbacksRejectedQuietForAFewForgeries", "PendinglinkCallbacksRejected", []string{
			`pendinglink_callbacks_rejected_total{reason="signature", instance="a"} 0+1x30`,
			`pendinglink_events_stored_total{kind="add_external_contact", instance="a"} 0+60x30`,
			`pendinglink_events_duplicate_total{instance="a"} 0x30`,
		}, nil},
		{"QueueGrowingCountsEachJobOnce", "PendinglinkQueueGrowing", []string{
			`pendinglink_jobs{queue="resolve", state="available", instance="a"} 1000+50x30`,
			`pendinglink_jobs{queue="resolve", state="available", instance="b"} 1000+50x30`,
			`pendinglink_jobs{queue="register", state="available", instance="a"} 90000+500x30`,
		}, map[string]float64{`{queue="resolve"}`: 2000}},
		{"QueueGrowingQuietWhenDraining", "PendinglinkQueueGrowing", []string{
			`pendinglink_jobs{queue="resolve", state="available", instance="a"} 5000-50x30`,
		}, nil},
		{"QuotaExhaustedMonthNotHour", "PendinglinkQuotaExhausted", []string{
			`pendinglink_quota_used{api="a", window="1h", instance="a"} 100000x30`,
			`pendinglink_quota_limit{api="a", window="1h", instance="a"} 100000x30`,
			`pendinglink_quota_used{api="a", window="31d", instance="a"} 7500000x30`,
			`pendinglink_quota_limit{api="a", window="31d", instance="a"} 7500000x30`,
		}, map[string]float64{`{api="a", window="31d"}`: 7500000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			expr, ok := exprs[tc.alert]
			require.True(t, ok, "no alert %s in %s", tc.alert, alertsFile)
			q, err := engine.NewInstantQuery(t.Context(), recordedSeries(t, pql, tc.series), nil, expr, time.Unix(0, 0).Add(20*time.Minute))
			require.NoError(t, err)
			defer q.Close()
			res := q.Exec(t.Context())
			require.NoError(t, res.Err)
			vec, err := res.Vector()
			require.NoError(t, err)
			got := map[string]float64{}
			for _, s := range vec {
				got[s.Metric.String()] = s.F
			}
			if tc.want == nil {
				tc.want = map[string]float64{}
			}
			require.Equal(t, tc.want, got)
		})
	}
}

// recordedSeries is a storage.Queryable of the series given in PromQL's
// series notation (as in promtool's rule tests), one sample a minute from 0.
func recordedSeries(t *testing.T, pql parser.Parser, descs []string) storage.Queryable {
	t.Helper()
	var all []storage.Series
	for _, d := range descs {
		lset, values, err := pql.ParseSeriesDesc(d)
		require.NoError(t, err, d)
		var samples []chunks.Sample
		for i, v := range values {
			if !v.Omitted {
				samples = append(samples, floatSample{t: int64(i) * time.Minute.Milliseconds(), f: v.Value})
			}
		}
		all = append(all, storage.NewListSeries(lset, samples))
	}
	return &storage.MockQueryable{MockQuerier: &storage.MockQuerier{
		SelectMockFunction: func(_ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
			out := &seriesSlice{}
			for _, s := range all {
				if matchesAll(s.Labels(), ms) {
					out.series = append(out.series, s)
				}
			}
			sort.Slice(out.series, func(i, j int) bool { return labels.Compare(out.series[i].Labels(), out.series[j].Labels()) < 0 })
			return out
		},
	}}
}

func matchesAll(lset labels.Labels, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if !m.Matches(lset.Get(m.Name)) {
			return false
		}
	}
	return true
}

// seriesSlice is a storage.SeriesSet over a slice.
type seriesSlice struct {
	series []storage.Series
	next   int
}

func (s *seriesSlice) Next() bool                        { s.next++; return s.next <= len(s.series) }
func (s *seriesSlice) At() storage.Series                { return s.series[s.next-1] }
func (s *seriesSlice) Err() error                        { return nil }
func (s *seriesSlice) Warnings() annotations.Annotations { return nil }

// floatSample is one float sample (chunks.Sample).
type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                      { return s.t }
func (s floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                    { return s.f }
func (s floatSample) H() *histogram.Histogram       { return nil }
func (s floatSample) FH() *histogram.FloatHistogram { return nil }
func (s floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample           { return s }
