package handlers

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/wecom"
)

// GaugeSource reads the database-wide figures /metrics exports as gauges.
// *pipeline.Pipeline implements it.
type GaugeSource interface {
	Gauges(ctx context.Context) (pipeline.Gauges, error)
}

// DefaultGaugesMaxAge is how long the database figures of /metrics are
// reused: they cost the counting queries of /v1/status and /v1/quota (0.2 to
// 1 s on SQLite with 100,000 fans and queued registrations), and frequent
// scrapes, or several Prometheus servers, should not multiply that.
const DefaultGaugesMaxAge = 30 * time.Second

// gaugeReadTimeout bounds one read of the database figures, so a stuck
// database makes /metrics report pendinglink_database_up 0, not hang.
const gaugeReadTimeout = 5 * time.Second

// gaugeCollector exports pipeline.Gauges. Every instance sharing a database
// reports the same values; alerting rules take the max across instances.
type gaugeCollector struct {
	src    GaugeSource
	now    func() time.Time
	maxAge time.Duration
	logger *slog.Logger

	mu     sync.Mutex
	readAt time.Time
	last   pipeline.Gauges
	ok     bool

	up, events, fans, fansExpiring, links, jobs                    *prometheus.Desc
	quotaUsed, quotaLimit, quotaSpent, sustainable, overCapacity   *prometheus.Desc
	renewalEarly, expiringUnrenewed                                *prometheus.Desc
	backlog, backlogDone, webhookUndelivered, webhookFailing, hook *prometheus.Desc
}

func newGaugeCollector(src GaugeSource, now func() time.Time, maxAge time.Duration, logger *slog.Logger) *gaugeCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("pendinglink_"+name, help, labels, nil)
	}
	return &gaugeCollector{
		src: src, now: now, maxAge: maxAge, logger: logger,
		up:           d("database_up", "1 if the last read of the database figures below succeeded, 0 if it failed."),
		events:       d("events", "Stored events by state (resolved, pending, unmatched, failed).", "state"),
		fans:         d("fans", "Fans by state: registered, live (holding a live pending_id), expired (newest pending_id expired), queued (waiting in the registration queue).", "state"),
		fansExpiring: d("fans_expiring", "Fans whose newest pending_id is live and expires within the given time.", "within"),
		links:        d("links", "Links by state (active, ended).", "state"),
		jobs:         d("jobs", "River jobs by queue and state (unfinished states and discarded).", "queue", "state"),
		quotaUsed:    d("quota_used", "Calls counted in the rolling quota window.", "api", "window"),
		quotaLimit:   d("quota_limit", "Calls this deployment may make in the rolling quota window (reserve and other apps' use deducted).", "api", "window"),
		quotaSpent:   d("quota_spent_by_others", "1 while WeCom's 45009 answers show another app of the corp has spent the window.", "api", "window"),
		sustainable:  d("quota_sustainable_fans", "How many fans the unionid_to_pending_id quota keeps live for good, each renewed once per cycle."),
		overCapacity: d("quota_over_capacity_fans", "Live and queued fans the quota cannot keep live: the lowest-priority ones will expire."),
		expiringUnrenewed: d("fans_expiring_unrenewed",
			"Fans whose newest pending_id expires within 7 days (or expired, waiting for renewal) that the quota cannot renew within those 7 days, at least: expiring_unrenewed_7_days of GET /v1/quota."),
		renewalEarly: d("renewal_early", "1 while renewals start PENDINGLINK_RENEW_BEFORE ahead of expiry, 0 while they start at expiry (PENDINGLINK_RENEW_EARLY)."),
		backlog:      d("backlog", "Work waiting for WeCom quota: registrations (interactive, bulk, renewal) and existing-customer checks.", "work"),
		backlogDone:  d("backlog_done_seconds", "Seconds from now until the quota lets this work and everything ahead of it finish (0 when none waits).", "work"),
		webhookUndelivered: d("webhook_undelivered",
			"Webhook notifications not yet delivered (exported only with PENDINGLINK_WEBHOOK_URL)."),
		webhookFailing: d("webhook_failing",
			"Undelivered webhook notifications whose last attempt failed."),
		hook: d("webhook_oldest_undelivered_seconds",
			"Age of the oldest undelivered webhook notification (0 when none waits)."),
	}
}

// Describe implements prometheus.Collector.
func (c *gaugeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.events, c.fans, c.fansExpiring, c.links, c.jobs,
		c.quotaUsed, c.quotaLimit, c.quotaSpent, c.sustainable, c.overCapacity, c.renewalEarly, c.expiringUnrenewed,
		c.backlog, c.backlogDone, c.webhookUndelivered, c.webhookFailing, c.hook} {
		ch <- d
	}
}

// read returns the figures, reading them again once they are older than
// maxAge. A failed read is reused as long, so a sick database is not asked
// again at every scrape.
func (c *gaugeCollector) read() (pipeline.Gauges, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if !c.readAt.IsZero() && now.Sub(c.readAt) < c.maxAge {
		return c.last, c.ok
	}
	ctx, cancel := context.WithTimeout(context.Background(), gaugeReadTimeout)
	defer cancel()
	g, err := c.src.Gauges(ctx)
	if err != nil {
		c.logger.Warn("metrics: database figures not read", "err", err)
	}
	c.readAt, c.last, c.ok = now, g, err == nil
	return g, c.ok
}

// Collect implements prometheus.Collector.
func (c *gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	g, ok := c.read()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if !ok {
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
	st := g.Status
	for state, n := range map[string]int64{"resolved": st.EventsResolved, "pending": st.EventsPending,
		"unmatched": st.EventsUnmatched, "failed": st.EventsFailed} {
		gauge(c.events, float64(n), state)
	}
	gauge(c.fans, float64(st.FansRegistered), "registered")
	gauge(c.fans, float64(st.FansValid), "live")
	gauge(c.fans, float64(st.FansExpired), "expired")
	gauge(c.fans, float64(st.FansQueued), "queued")
	gauge(c.fansExpiring, float64(g.ExpiringWithinDay), "1d")
	gauge(c.fansExpiring, float64(st.FansExpiring), "7d")
	gauge(c.links, float64(st.LinksActive), "active")
	gauge(c.links, float64(st.LinksTotal-st.LinksActive), "ended")
	for _, j := range g.Jobs {
		gauge(c.jobs, float64(j.Count), j.Queue, j.State)
	}

	f := g.Forecast
	for _, q := range []struct {
		api     string
		windows []quota.Usage
	}{{wecom.APIUnionIDToPendingID, f.Pending}, {wecom.APIUnionIDToExternalUserID, f.Existing}} {
		for _, u := range q.windows {
			w := windowLabel(u.Length)
			gauge(c.quotaUsed, float64(u.Used), q.api, w)
			gauge(c.quotaLimit, float64(u.Limit), q.api, w)
			gauge(c.quotaSpent, boolValue(u.External && u.SpentUntil.After(c.now())), q.api, w)
		}
	}
	gauge(c.sustainable, float64(f.Sustainable))
	gauge(c.overCapacity, float64(f.OverCapacity))
	gauge(c.expiringUnrenewed, float64(f.ExpiringUnrenewed))
	gauge(c.renewalEarly, boolValue(f.Renewal.Early))
	now := c.now()
	for _, b := range append(f.Registrations, f.Checks) {
		gauge(c.backlog, float64(b.Count), b.Name)
		var left time.Duration
		if !b.Done.IsZero() {
			left = max(b.Done.Sub(now), 0)
		}
		gauge(c.backlogDone, left.Seconds(), b.Name)
	}

	if w := g.Webhook; w != nil {
		gauge(c.webhookUndelivered, float64(w.Undelivered))
		gauge(c.webhookFailing, float64(w.Failing))
		var age time.Duration
		if !w.Oldest.IsZero() {
			age = max(now.Sub(w.Oldest), 0)
		}
		gauge(c.hook, age.Seconds())
	}
}

// windowLabel names a quota window as PromQL durations do: 1h, 1d, 31d.
func windowLabel(d time.Duration) string {
	switch {
	case d > 0 && d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	case d > 0 && d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return d.String()
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// wecomCollector exports the WeCom client's counters (per process).
type wecomCollector struct {
	wc                                    interface{ Stats() wecom.Stats }
	calls, errs, transport, quotaRejected *prometheus.Desc
}

func newWeComCollector(wc interface{ Stats() wecom.Stats }) *wecomCollector {
	return &wecomCollector{
		wc:    wc,
		calls: prometheus.NewDesc("pendinglink_wecom_calls_total", "WeCom API requests by API (retries included).", []string{"api"}, nil),
		errs:  prometheus.NewDesc("pendinglink_wecom_errors_total", "WeCom answers with a non-zero errcode, by errcode.", []string{"errcode"}, nil),
		transport: prometheus.NewDesc("pendinglink_wecom_transport_errors_total",
			"WeCom requests without a usable answer: network errors, timeouts, non-200 statuses.", nil, nil),
		quotaRejected: prometheus.NewDesc("pendinglink_wecom_quota_rejected_total",
			"Calls the local quota limiter refused (no request made; the work waits for the window).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *wecomCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.calls
	ch <- c.errs
	ch <- c.transport
	ch <- c.quotaRejected
}

// Collect implements prometheus.Collector.
func (c *wecomCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.wc.Stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for api, n := range s.Calls {
		counter(c.calls, n, api)
	}
	for code, n := range s.Errors {
		counter(c.errs, n, strconv.Itoa(code))
	}
	counter(c.transport, s.TransportErrors)
	counter(c.quotaRejected, s.QuotaRejected)
}

// registerCollectors registers the optional collectors cfg supplies.
func registerCollectors(cfg Config) error {
	var cs []prometheus.Collector
	if cfg.WeCom != nil {
		cs = append(cs, blockedGauge(cfg.WeCom), newWeComCollector(cfg.WeCom))
	}
	if cfg.Gauges != nil {
		cs = append(cs, newGaugeCollector(cfg.Gauges, cfg.Now, cfg.GaugesMaxAge, cfg.Logger))
	}
	for _, c := range cs {
		if err := cfg.Registerer.Register(c); err != nil {
			return fmt.Errorf("handlers: register metrics: %w", err)
		}
	}
	return nil
}
