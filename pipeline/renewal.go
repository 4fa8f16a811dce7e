package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/pendinglink/pendinglink/store"
)

// RenewEarly says whether renewals start RenewBefore ahead of a fan's
// pending_id expiry or at the expiry. Which is right depends on what WeCom
// answers a re-registration of a live id (protocol reference §9 #10,
// unconfirmed): if it issues a new id, renewing early keeps the fan
// matchable without a gap; if it gives the same id back until it expires,
// an early renewal spends a call for nothing and a second one follows the
// expiry.
type RenewEarly string

const (
	// RenewEarlyAuto renews early until the store's renewal observations
	// show WeCom giving the same id back (RenewLearnAfter answers, none
	// with a new id), then at expiry; one new id answered brings early
	// renewal back. The default.
	RenewEarlyAuto RenewEarly = "auto"
	// RenewEarlyAlways always renews RenewBefore ahead of expiry.
	RenewEarlyAlways RenewEarly = "always"
	// RenewEarlyNever renews at expiry only.
	RenewEarlyNever RenewEarly = "never"
)

// ParseRenewEarly parses a RenewEarly setting.
func ParseRenewEarly(s string) (RenewEarly, error) {
	switch m := RenewEarly(s); m {
	case RenewEarlyAuto, RenewEarlyAlways, RenewEarlyNever:
		return m, nil
	}
	return "", fmt.Errorf("renew early %q: must be auto, always or never", s)
}

// DefaultRenewLearnAfter is Config.RenewLearnAfter's default. One renewal
// answered with a new id settles the question for good, but the same id
// given back could be a fluke (an answer cached for a moment, a WeCom that
// re-issues only some ids), and a wrong switch leaves fans unmatchable
// between expiry and renewal; learning costs one wasted call per
// observation. Twenty same answers in a row, with no new one, are
// unlikely (under 5 %) from a WeCom that re-issues as often as one time in
// seven, for twenty calls of a quota of 100,000 an hour.
const DefaultRenewLearnAfter = 20

// RenewalPolicy is when renewals start, and what decided it.
type RenewalPolicy struct {
	// Mode is the setting (Config.RenewEarly).
	Mode RenewEarly
	// Early: renewals start RenewBefore ahead of expiry; otherwise at
	// expiry.
	Early bool
	// RenewBefore is how long before expiry renewals start: Config's
	// RenewBefore when Early, else 0.
	RenewBefore time.Duration
	// LearnAfter is Config.RenewLearnAfter: how many same-id answers, and
	// no new one, turn auto to renewing at expiry.
	LearnAfter int
	// Observed counts what WeCom answered renewals of live ids.
	Observed store.RenewalObservations
}

type renewalStore interface {
	// RenewalObservations counts what WeCom answered re-registrations of
	// fans holding a live pending_id.
	RenewalObservations(ctx context.Context) (store.RenewalObservations, error)
}

// renewalPolicy decides from cfg and the observations in the database, so
// every instance decides alike.
func renewalPolicy(ctx context.Context, cfg Config, s renewalStore) (RenewalPolicy, error) {
	p := RenewalPolicy{Mode: cfg.RenewEarly, LearnAfter: cfg.RenewLearnAfter}
	o, err := s.RenewalObservations(ctx)
	if err != nil {
		return p, fmt.Errorf("renewal observations: %w", err)
	}
	p.Observed = o
	switch cfg.RenewEarly {
	case RenewEarlyAlways:
		p.Early = true
	case RenewEarlyNever:
		p.Early = false
	default:
		p.Early = o.NewID > 0 || o.SameID < int64(cfg.RenewLearnAfter)
	}
	if p.Early {
		p.RenewBefore = cfg.RenewBefore
	}
	return p, nil
}

// RenewalPolicy reports when renewals start now, and why.
func (p *Pipeline) RenewalPolicy(ctx context.Context) (RenewalPolicy, error) {
	return renewalPolicy(ctx, p.cfg, p.cfg.Store)
}
