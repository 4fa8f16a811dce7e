package store

import (
	"context"
	"fmt"
	"time"
)

// RetryFilter selects what RetryEvents and RetryFans re-drive.
type RetryFilter struct {
	// State is the events' state: EventFailed (the default) or
	// EventUnmatched (look the customers up again). Fans are always the
	// failed ones.
	State string
	// Reason keeps only rows whose reason contains it ("" keeps all).
	Reason string
	// Since and Until bound when the event was received (or the fan last
	// changed); zero values do not bound.
	Since, Until time.Time
	// DryRun counts without changing anything.
	DryRun bool
}

// Validate reports whether f can be used for events; the error wraps
// ErrInvalid.
func (f RetryFilter) validate(events bool) (RetryFilter, error) {
	if events && f.State == "" {
		f.State = EventFailed
	}
	switch {
	case events && f.State != EventFailed && f.State != EventUnmatched:
		return f, fmt.Errorf("%w: state must be %q or %q", ErrInvalid, EventFailed, EventUnmatched)
	case !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since):
		return f, fmt.Errorf("%w: until is before since", ErrInvalid)
	case len(f.Reason) > MaxFieldLen:
		return f, fmt.Errorf("%w: reason is too long", ErrInvalid)
	}
	return f, nil
}

// RetryEvents re-drives the events f selects: each gets its jobs again (as
// when it was stored) and goes back to pending, in the same transaction.
// It returns how many events matched (with DryRun, how many would).
func (db *DB) RetryEvents(ctx context.Context, f RetryFilter) (int64, error) {
	f, err := f.validate(true)
	if err != nil {
		return 0, err
	}
	return db.eng.retryEvents(ctx, db.jobs(), f, db.cfg.Now())
}

// RetryFans re-queues the failed fans f selects for registration (bulk
// priority) and returns how many matched.
func (db *DB) RetryFans(ctx context.Context, f RetryFilter) (int64, error) {
	f, err := f.validate(false)
	if err != nil {
		return 0, err
	}
	return db.eng.retryFans(ctx, f, db.cfg.Now())
}
