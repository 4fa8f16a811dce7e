package wecomtest

import (
	"time"

	"github.com/pendinglink/pendinglink/internal/fakeclock"
)

// Clock is a fake clock that moves only when told to (see
// fakeclock.Clock). The fake WeCom reads it for token expiry, pending_id
// expiry, quota windows and event CreateTime; give the same clock to the
// code under test (Server.Client does) so both sides agree on the time.
type Clock = fakeclock.Clock

// NewClock returns a clock stopped at t.
func NewClock(t time.Time) *Clock { return fakeclock.New(t) }
