package pipeline

import (
	"context"
	"time"

	"github.com/pendinglink/pendinglink/store"
)

// Gauges are the database-wide figures /metrics exports as gauges, read in
// one pass: every instance sharing a database reports the same values.
type Gauges struct {
	// Forecast is GET /v1/quota's forecast.
	Forecast Forecast
	// Status is the pipeline counters, with fans counted expiring within 7
	// days (FansExpiring equals Forecast.ExpiringWithin7Days).
	Status store.PipelineStatus
	// ExpiringWithinDay counts fans whose newest pending_id expires within
	// 24 hours: renewal starts RenewBefore ahead, so unless the quota is
	// over capacity these are fans it failed to renew.
	ExpiringWithinDay int64
	// Jobs counts River jobs by queue and state (store.JobStates), with a
	// zero for each of the pipeline's queues and states that has none, so
	// that every series exists from the start.
	Jobs []store.JobCount
	// Webhook is the outbox's delivery status; nil without a webhook, where
	// notifications stay in the outbox on purpose.
	Webhook *store.OutboxStatus
}

type gaugeStore interface {
	// JobCounts counts River jobs by queue and state.
	JobCounts(ctx context.Context) ([]store.JobCount, error)
	// OutboxStatus summarises the undelivered notifications.
	OutboxStatus(ctx context.Context) (store.OutboxStatus, error)
	// CountFansExpiring counts fans whose live pending_id expires within.
	CountFansExpiring(ctx context.Context, within time.Duration) (int64, error)
}

// Gauges reads the figures behind the gauges of /metrics.
func (p *Pipeline) Gauges(ctx context.Context) (Gauges, error) {
	var (
		g   Gauges
		err error
	)
	if g.Status, err = p.cfg.Store.PipelineStatus(ctx, forecastExpiring); err != nil {
		return g, err
	}
	if g.Forecast, err = p.forecast(ctx, g.Status); err != nil {
		return g, err
	}
	if g.ExpiringWithinDay, err = p.cfg.Store.CountFansExpiring(ctx, 24*time.Hour); err != nil {
		return g, err
	}
	jobs, err := p.cfg.Store.JobCounts(ctx)
	if err != nil {
		return g, err
	}
	g.Jobs = withZeroJobCounts(jobs)
	if p.cfg.Webhook != nil {
		o, err := p.cfg.Store.OutboxStatus(ctx)
		if err != nil {
			return g, err
		}
		g.Webhook = &o
	}
	return g, nil
}

// withZeroJobCounts adds a zero count for each of the pipeline's queues and
// each state that jobs lacks.
func withZeroJobCounts(jobs []store.JobCount) []store.JobCount {
	type key struct{ queue, state string }
	seen := make(map[key]bool, len(jobs))
	for _, j := range jobs {
		seen[key{j.Queue, j.State}] = true
	}
	for _, q := range []string{QueueDefault, QueueRegister, QueueResolve} {
		for _, s := range store.JobStates {
			if !seen[key{q, s}] {
				jobs = append(jobs, store.JobCount{Queue: q, State: s})
			}
		}
	}
	return jobs
}
