package store

import (
	"context"
	"time"
)

func (e *sqlEngine) jobCounts(ctx context.Context) ([]JobCount, error) {
	// River's fetch index starts with (state, queue), so this reads the
	// unfinished and discarded jobs only, never the completed ones.
	return queryRows(ctx, e.read, "job counts", `SELECT queue, state, count(*) FROM river_job
		WHERE state IN ('available', 'scheduled', 'retryable', 'running', 'pending', 'discarded')
		GROUP BY queue, state ORDER BY queue, state`,
		func(r rowScanner) (c JobCount, err error) {
			err = r.Scan(&c.Queue, &c.State, &c.Count)
			return c, err
		})
}

func (e *sqlEngine) outboxStatus(ctx context.Context) (OutboxStatus, error) {
	var (
		s      OutboxStatus
		oldest *int64
	)
	// The partial indexes on delivered_at IS NULL keep this to the rows
	// still waiting.
	err := e.read.QueryRowContext(ctx, `SELECT count(*),
		coalesce(sum(CASE WHEN last_error <> '' THEN 1 ELSE 0 END), 0), min(created_at)
		FROM outbox WHERE delivered_at IS NULL`).Scan(&s.Undelivered, &s.Failing, &oldest)
	if err != nil {
		return s, dbError("outbox status", err)
	}
	if oldest != nil {
		s.Oldest = time.UnixMilli(*oldest).UTC()
	}
	return s, nil
}
