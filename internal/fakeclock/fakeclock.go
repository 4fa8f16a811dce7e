// Package fakeclock is the one fake clock of pendinglink's tests: the store
// kit, the fake WeCom, the WeCom client's and the quota's tests all move time
// with it, so every side of a test agrees on the time.
package fakeclock

import (
	"context"
	"sync"
	"time"
)

// Clock is a clock that moves only when told to. It is safe for concurrent
// use. A zero Clock reads as the zero time; use New.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a clock stopped at t.
func New(t time.Time) *Clock {
	return &Clock{now: t}
}

// Now returns the clock's current time. Its signature matches time.Now, so
// c.Now can be passed wherever a func() time.Time is wanted.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and returns the new time. It panics
// if d is negative, because going back is almost always a test bug; use Set
// to do it on purpose.
func (c *Clock) Advance(d time.Duration) time.Time {
	if d < 0 {
		panic("fakeclock: Advance with a negative duration; use Set to go back")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// Set moves the clock to t, forward or back.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Sleep is a stand-in for waiting, for code under test that takes a sleep
// function (the WeCom client's retry backoff, a quota limiter): instead of
// waiting it moves the clock forward by d, as if the time had passed, and
// returns ctx's error if ctx has ended. Concurrent sleepers each move the
// clock. d <= 0 does not move it.
func (c *Clock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d > 0 {
		c.Advance(d)
	}
	return nil
}
