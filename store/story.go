package store

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Story is everything the store knows of one fan or one dealer's customer,
// gathered for an operator who asks "what happened, and why is it not
// linked yet?". Every list is bounded (StoryLimit) and read by index, so
// asking costs the same with ten fans or ten million.
type Story struct {
	// Fans is the fan asked about, or the fans holding a pending_id the
	// customer asked about was looked up to, or linked to it.
	Fans []StoryFan `json:"fans"`
	// Customers is the customer asked about, or the customers looked up to
	// one of the fan's pending_ids, or linked to it.
	Customers []StoryCustomer `json:"customers"`
	// Links are the links between them, newest first.
	Links []Link `json:"links"`
	// Steps tell the story in order, oldest first.
	Steps []StoryStep `json:"steps"`
	// Why says why no link is active; empty when one is.
	Why []string `json:"why"`
}

// StoryFan is a fan as the story tells it.
type StoryFan struct {
	UnionID   string `json:"unionid"`
	OpenID    string `json:"openid"`
	Priority  int    `json:"priority"`
	State     string `json:"state"`
	LastError string `json:"last_error,omitempty"`
	// CreatedAt is when the brand registered the fan with pendinglink.
	CreatedAt time.Time `json:"created_at"`
	// CheckedAt is when unionid_to_external_userid was last asked about
	// the fan, nil if never.
	CheckedAt *time.Time `json:"checked_at,omitempty"`
	// LastActiveAt is when the brand last saw the fan active, nil if it
	// never said: it orders the fan among equals in the queue.
	LastActiveAt *time.Time     `json:"last_active_at,omitempty"`
	PendingIDs   []FanPendingID `json:"pending_ids"`
}

// StoryCustomer is a dealer's customer as the story tells it.
type StoryCustomer struct {
	CorpID         string `json:"corp_id"`
	ExternalUserID string `json:"external_userid"`
	// Lookups are the customer's batch/external_userid_to_pending_id
	// answers, one per chat it was resolved in ("" for a contact).
	Lookups []Lookup `json:"lookups"`
	// Follows are who holds the customer: staff members, chats or an
	// unnamed holder (see the follows table).
	Follows []Follow `json:"follows"`
	// Events are the callbacks the lookups and follows name, oldest first.
	Events []StoryEvent `json:"events"`
}

// Lookup is one resolution of a customer, with its pending_id's expiry.
type Lookup struct {
	Resolution
	// ExpiresAt is when PendingID stops matching (nil without one).
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Follow is one holder of a customer.
type Follow struct {
	UserID string `json:"user_id,omitempty"`
	ChatID string `json:"chat_id,omitempty"`
	Active bool   `json:"active"`
	// Source is the event kind that set the row, FollowTransfer or
	// FollowExisting.
	Source string `json:"source"`
	// ChangedAt is the WeCom CreateTime of that change.
	ChangedAt time.Time `json:"changed_at"`
	EventID   int64     `json:"event_id,omitempty"`
}

// StoryEvent is a stored callback, without its raw plaintext.
type StoryEvent struct {
	ID         int64      `json:"id"`
	Kind       string     `json:"kind"`
	UserID     string     `json:"user_id,omitempty"`
	ChatID     string     `json:"chat_id,omitempty"`
	State      string     `json:"state"`
	Reason     string     `json:"reason,omitempty"`
	CreateTime *time.Time `json:"create_time,omitempty"`
	ReceivedAt time.Time  `json:"received_at"`
}

// StoryStep is one thing that happened.
type StoryStep struct {
	At   time.Time `json:"at"`
	What string    `json:"what"`
}

// StoryLimit bounds every list of a Story (fans, customers, and each
// customer's lookups, follows and events): a customer in hundreds of chats
// tells its story by its newest rows.
const StoryLimit = 50

// FanStory returns the story of the fan with this unionid, or ErrNotFound.
func (db *DB) FanStory(ctx context.Context, unionID string) (*Story, error) {
	if err := (FanInput{UnionID: unionID, OpenID: "-"}).Validate(); err != nil {
		return nil, err
	}
	// The story's queries are engine-neutral SQL (sql_story.go), so they
	// live on the shared layer rather than in the engine interface.
	s, err := db.eng.shared().fanStory(ctx, unionID)
	if err != nil {
		return nil, err
	}
	s.tell(db.cfg.Now())
	return s, nil
}

// CustomerStory returns the story of a dealer's customer, or ErrNotFound
// when the store holds no lookup, holder or link of it.
func (db *DB) CustomerStory(ctx context.Context, corpID, externalUserID string) (*Story, error) {
	if corpID == "" || externalUserID == "" || len(corpID) > MaxFieldLen || len(externalUserID) > MaxFieldLen {
		return nil, fmt.Errorf("%w: corp_id and external_userid must be 1 to %d bytes", ErrInvalid, MaxFieldLen)
	}
	s, err := db.eng.shared().customerStory(ctx, corpID, externalUserID)
	if err != nil {
		return nil, err
	}
	s.tell(db.cfg.Now())
	return s, nil
}

// tell fills Steps and Why from what was gathered.
func (s *Story) tell(now time.Time) {
	s.Steps = s.steps()
	s.Why = s.why(now)
	if s.Fans == nil {
		s.Fans = []StoryFan{}
	}
	if s.Customers == nil {
		s.Customers = []StoryCustomer{}
	}
	if s.Links == nil {
		s.Links = []Link{}
	}
}

func (s *Story) steps() []StoryStep {
	var out []StoryStep
	add := func(at time.Time, format string, a ...any) {
		out = append(out, StoryStep{At: at, What: fmt.Sprintf(format, a...)})
	}
	for _, f := range s.Fans {
		add(f.CreatedAt, "fan %s registered with pendinglink", f.UnionID)
		for _, p := range f.PendingIDs {
			add(p.IssuedAt, "WeCom issued pending_id %s for fan %s (valid until %s)", p.PendingID, f.UnionID, p.ExpiresAt.Format(time.RFC3339))
		}
		if f.CheckedAt != nil {
			add(*f.CheckedAt, "fan %s checked against unionid_to_external_userid", f.UnionID)
		}
	}
	for _, c := range s.Customers {
		who := c.CorpID + "/" + c.ExternalUserID
		for _, ev := range c.Events {
			by := ev.UserID
			if ev.ChatID != "" {
				by = "chat " + ev.ChatID
			}
			add(ev.ReceivedAt, "callback #%d %s by %s received (now %s)", ev.ID, ev.Kind, by, ev.State)
		}
		for _, l := range c.Lookups {
			switch {
			case l.State == ResolutionFailed:
				add(l.ResolvedAt, "lookup of %s failed: %s", who, l.Reason)
			case l.PendingID == "":
				add(l.ResolvedAt, "lookup of %s: WeCom gave no pending_id", who)
			default:
				add(l.ResolvedAt, "lookup of %s: pending_id %s", who, l.PendingID)
			}
		}
		told := map[int64]bool{}
		for _, ev := range c.Events {
			told[ev.ID] = true
		}
		for _, f := range c.Follows {
			if told[f.EventID] {
				continue // its callback's step tells it, at the time it arrived
			}
			holder := "staff " + f.UserID
			switch {
			case f.ChatID != "":
				holder = "chat " + f.ChatID
			case f.UserID == "":
				holder = "an unnamed holder (" + f.Source + ")"
			}
			verb := "holds"
			if !f.Active {
				verb = "no longer holds"
			}
			add(f.ChangedAt, "%s %s %s", holder, verb, who)
		}
	}
	for _, l := range s.Links {
		add(l.MatchedAt, "linked fan %s to %s/%s", l.UnionID, l.CorpID, l.ExternalUserID)
		if l.EndedAt != nil {
			add(*l.EndedAt, "link of fan %s to %s/%s ended (%s)", l.UnionID, l.CorpID, l.ExternalUserID, l.EndReason)
		}
	}
	slices.SortStableFunc(out, func(a, b StoryStep) int { return a.At.Compare(b.At) })
	if out == nil {
		out = []StoryStep{}
	}
	return out
}

// why explains, from the rows gathered, why no link is active. The rules
// are the pipeline's: a link needs a fan's live pending_id equal to a
// customer's lookup, and a holder of the customer at the dealer.
func (s *Story) why(now time.Time) []string {
	out := []string{}
	for _, l := range s.Links {
		if l.Active {
			return out
		}
	}
	for _, l := range s.Links {
		ended := "ended"
		if l.EndedAt != nil {
			ended += " at " + l.EndedAt.Format(time.RFC3339)
		}
		out = append(out, fmt.Sprintf("the link of fan %s to %s/%s %s (%s)",
			l.UnionID, l.CorpID, l.ExternalUserID, ended, l.EndReason))
	}
	live := map[string]bool{}
	for _, f := range s.Fans {
		switch f.State {
		case FanNew:
			out = append(out, "fan "+f.UnionID+" waits for its registration (unionid_to_pending_id), which the quota paces: see GET /v1/quota")
		case FanFailed:
			out = append(out, "fan "+f.UnionID+" was refused by WeCom ("+f.LastError+"): fix the cause, then pendinglink retry fans")
		}
		for _, p := range f.PendingIDs {
			if p.ExpiresAt.After(now) {
				live[p.PendingID] = true
			}
		}
		if f.State == FanRegistered && len(f.PendingIDs) > 0 && !live[f.PendingIDs[0].PendingID] {
			out = append(out, fmt.Sprintf("fan %s's pending_id expired at %s: the renew job registers it again",
				f.UnionID, f.PendingIDs[0].ExpiresAt.Format(time.RFC3339)))
		}
	}
	if len(s.Customers) == 0 && len(s.Fans) > 0 {
		f := s.Fans[0]
		switch {
		case f.State != FanRegistered:
		case f.CheckedAt == nil:
			out = append(out, "no dealer's customer has been looked up to this fan's pending_id, and the fan was not checked against unionid_to_external_userid yet: the reconcile job checks it as that quota allows")
		default:
			out = append(out, "no dealer's customer has been looked up to this fan's pending_id, and unionid_to_external_userid found none at "+
				f.CheckedAt.Format(time.RFC3339)+": no dealer has added this person, or the add was not heard (a reconcile sweep looks again)")
		}
	}
	for _, c := range s.Customers {
		who := c.CorpID + "/" + c.ExternalUserID
		if len(c.Lookups) == 0 {
			out = append(out, who+" has not been looked up yet: its resolve job is queued or waiting for WeCom (see events.pending and wecom.blocked in /v1/status)")
		}
		for _, l := range c.Lookups {
			switch {
			case l.State == ResolutionFailed:
				out = append(out, "the lookup of "+who+" failed: "+l.Reason+"; fix the cause, then pendinglink retry events")
			case l.PendingID == "":
				out = append(out, "WeCom gave "+who+" no pending_id: the person is not a registered fan yet, or WeCom gives none before the fan registers; registering the fan checks it against unionid_to_external_userid")
			case l.ExpiresAt != nil && !l.ExpiresAt.After(now):
				out = append(out, fmt.Sprintf("%s's pending_id %s expired at %s; a later event or a reconcile sweep finds it again", who, l.PendingID, l.ExpiresAt.Format(time.RFC3339)))
			case len(s.Fans) == 0:
				out = append(out, "no registered fan holds "+who+"'s pending_id "+l.PendingID+": the brand has not registered this person as a fan yet")
			case !live[l.PendingID]:
				out = append(out, "no registered fan holds "+who+"'s pending_id "+l.PendingID+" now")
			}
		}
		held := len(c.Follows) == 0
		for _, f := range c.Follows {
			held = held || f.Active
		}
		if !held {
			out = append(out, "no staff member or chat of "+c.CorpID+" holds "+c.ExternalUserID+" any more")
		}
	}
	return out
}

// Activity is the recent traffic, bucketed for charts.
type Activity struct {
	// Since is the start of the first minute of EventsPerMinute, which
	// counts the events stored (callbacks, duplicates not counted) in each
	// minute up to the current one.
	Since           time.Time `json:"since"`
	EventsPerMinute []int64   `json:"events_per_minute"`
	// HoursSince is the start of the first hour of LinksPerHour, which
	// counts the links made (or made again) in each hour up to the current
	// one.
	HoursSince   time.Time `json:"hours_since"`
	LinksPerHour []int64   `json:"links_per_hour"`
}

// MaxActivityWindow is the longest window Activity charts.
const MaxActivityWindow = 7 * 24 * time.Hour

// Activity returns the events stored per minute and the links made per hour
// over the last window (whole hours, 1 hour to MaxActivityWindow), current
// minute and hour included. Pruned events are not counted.
func (db *DB) Activity(ctx context.Context, window time.Duration) (Activity, error) {
	if window < time.Hour || window > MaxActivityWindow || window%time.Hour != 0 {
		return Activity{}, fmt.Errorf("%w: activity window must be whole hours from 1h to %s", ErrInvalid, MaxActivityWindow)
	}
	now := db.cfg.Now()
	a := Activity{
		Since:      now.Truncate(time.Minute).Add(time.Minute - window).UTC(),
		HoursSince: now.Truncate(time.Hour).Add(time.Hour - window).UTC(),
	}
	minutes, hours, err := db.eng.shared().activity(ctx, a.Since, a.HoursSince)
	if err != nil {
		return Activity{}, err
	}
	a.EventsPerMinute = dense(minutes, a.Since, time.Minute, int(window/time.Minute))
	a.LinksPerHour = dense(hours, a.HoursSince, time.Hour, int(window/time.Hour))
	return a, nil
}

// dense lays counts keyed by bucket start (unix ms) out as n buckets of
// width from since, zeros included.
func dense(counts map[int64]int64, since time.Time, width time.Duration, n int) []int64 {
	out := make([]int64, n)
	for at, c := range counts {
		if i := int((at - since.UnixMilli()) / width.Milliseconds()); i >= 0 && i < n {
			out[i] += c
		}
	}
	return out
}

// OutboxHealth is how webhook delivery is going.
type OutboxHealth struct {
	// Undelivered counts notifications not delivered yet, up to
	// OutboxCountLimit; More is true when there are more than that.
	Undelivered int64 `json:"undelivered"`
	More        bool  `json:"more"`
	// Failing counts those of them whose delivery failed at least once.
	Failing int64 `json:"failing"`
	// OldestUndelivered is when the oldest of them was written.
	OldestUndelivered *time.Time `json:"oldest_undelivered_at,omitempty"`
	// LastError is the error of a failing one, "" if none fails.
	LastError string `json:"last_error,omitempty"`
	// LastDelivered is when the newest delivered notification was.
	LastDelivered *time.Time `json:"last_delivered_at,omitempty"`
}

// OutboxCountLimit is where OutboxHealth stops counting.
const OutboxCountLimit = 10000

// OutboxHealth reports the webhook's backlog and its last error.
func (db *DB) OutboxHealth(ctx context.Context) (OutboxHealth, error) {
	return db.eng.shared().outboxHealth(ctx)
}
