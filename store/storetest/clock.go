package storetest

import (
	"sync"
	"time"
)

// Clock is a fake clock that a test moves by hand: pass its Now as
// store.Config.Now (and to anything else that must agree with the store).
// It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock reading start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and returns the new time. It panics
// if d is negative, which is almost always a test bug; Set goes back on
// purpose.
func (c *Clock) Advance(d time.Duration) time.Time {
	if d < 0 {
		panic("storetest: Clock.Advance with a negative duration; use Set to go back")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// Set sets the clock to t, which may be earlier than its time.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}
