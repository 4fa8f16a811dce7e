package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

// pipelineStart is where every pipeline test's clock starts.
var pipelineStart = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// testClock is a Config.Now that a test moves by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// pipelineBundle is a fresh store with a movable clock.
type pipelineBundle struct {
	db    *store.DB
	clock *testClock
}

// migrated holds the bytes of a freshly migrated store file. Each test
// writes a copy instead of migrating its own: that is about ten times faster
// (River's migrations dominate Open under -race).
var migrated struct {
	once  sync.Once
	bytes []byte
	err   error
}

// setupPipeline opens a copy of a migrated store, with a clock at
// pipelineStart.
func setupPipeline(t *testing.T, policy storetest.Policy) *pipelineBundle {
	t.Helper()
	migrated.once.Do(func() {
		tmpl := filepath.Join(t.TempDir(), "template.db")
		db, err := store.Open(context.Background(), store.Config{DSN: tmpl})
		if err != nil {
			migrated.err = err
			return
		}
		// Close checkpoints the WAL into the file, so the file alone is a copy.
		if err := db.Close(); err != nil {
			migrated.err = err
			return
		}
		migrated.bytes, migrated.err = os.ReadFile(tmpl)
	})
	require.NoError(t, migrated.err)
	dsn := filepath.Join(t.TempDir(), "pendinglink.db")
	require.NoError(t, os.WriteFile(dsn, migrated.bytes, 0o600))
	clock := &testClock{now: pipelineStart}
	db := storetest.MustOpen(t, store.Config{DSN: dsn, Now: clock.Now, Jobs: policy})
	return &pipelineBundle{db: db, clock: clock}
}

// mustCount runs a query returning one integer.
func (b *pipelineBundle) mustCount(t *testing.T, query string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, b.db.SQL().QueryRowContext(t.Context(), query, args...).Scan(&n))
	return n
}

func (b *pipelineBundle) links(t *testing.T) int64 {
	t.Helper()
	return b.mustCount(t, `SELECT count(*) FROM links`)
}

func (b *pipelineBundle) outbox(t *testing.T) int64 {
	t.Helper()
	return b.mustCount(t, `SELECT count(*) FROM outbox`)
}

func (b *pipelineBundle) outboxKinds(t *testing.T) []string {
	t.Helper()
	rows, err := b.db.SQL().QueryContext(t.Context(), `SELECT kind FROM outbox ORDER BY id`)
	require.NoError(t, err)
	defer rows.Close()
	var kinds []string
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		kinds = append(kinds, k)
	}
	require.NoError(t, rows.Err())
	return kinds
}

// jobCount counts the jobs of storetest.Policy that say what.
func (b *pipelineBundle) jobCount(t *testing.T, what string) int64 {
	t.Helper()
	var n int64
	for _, j := range policyJobs(t, b.db) {
		if j.What == what {
			n++
		}
	}
	return n
}

// addFan stores a fan without a job and, when pendingID is set, records it.
func (b *pipelineBundle) addFan(t *testing.T, unionID, pendingID string) []store.Link {
	t.Helper()
	_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: unionID, OpenID: "o-" + unionID}}, store.RegisterOpts{NoJob: true})
	require.NoError(t, err)
	if pendingID == "" {
		return nil
	}
	links, err := b.db.RecordFanPendingID(t.Context(), unionID, pendingID)
	require.NoError(t, err)
	return links
}

// saveEvent stores an event of the given kind and returns its id.
func (b *pipelineBundle) saveEvent(t *testing.T, kind string) *store.Event {
	t.Helper()
	ev := storetest.NewEvent(kind)
	inserted, err := b.db.SaveEvent(t.Context(), ev)
	require.NoError(t, err)
	require.True(t, inserted)
	return ev
}

func (b *pipelineBundle) eventState(t *testing.T, id int64) (state, reason string) {
	t.Helper()
	ev, err := b.db.FindEventByID(t.Context(), id)
	require.NoError(t, err)
	return ev.State, ev.Reason
}

func (b *pipelineBundle) customer(t *testing.T, corpID, externalUserID string) *store.CustomerDetail {
	t.Helper()
	c, err := b.db.FindCustomer(t.Context(), corpID, externalUserID)
	require.NoError(t, err)
	return c
}

func resolution(corp, external, pendingID string) store.Resolution {
	return store.Resolution{CorpID: corp, ExternalUserID: external, UserID: "test-staff", PendingID: pendingID}
}

func TestDB_RecordResolution(t *testing.T) {
	t.Parallel()

	t.Run("LinksFanRegisteredEarlier", func(t *testing.T) {
		t.Parallel()
		// Ensure a customer resolved to a fan's live pending_id is linked to that fan.
		b := setupPipeline(t, storetest.Policy{})
		require.Empty(t, b.addFan(t, "test-u1", "p-1"))
		b.clock.Add(time.Hour)

		links, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		require.NoError(t, err)
		require.Len(t, links, 1)
		l := links[0]
		require.NotZero(t, l.ID)
		require.Equal(t, "test-u1", l.UnionID)
		require.Equal(t, "o-test-u1", l.OpenID)
		require.Equal(t, "p-1", l.PendingID)
		require.Equal(t, "wwtestcorp", l.CorpID)
		require.Equal(t, "wmtest1", l.ExternalUserID)
		require.Equal(t, "test-staff", l.UserID)
		require.True(t, l.Active)
		require.Nil(t, l.EndedAt)
		require.True(t, l.MatchedAt.Equal(pipelineStart.Add(time.Hour)))

		require.Equal(t, int64(1), b.links(t))
		require.Equal(t, []string{"link_created"}, b.outboxKinds(t))
		c := b.customer(t, "wwtestcorp", "wmtest1")
		require.Len(t, c.Resolutions, 1)
		require.Equal(t, store.ResolutionMatched, c.Resolutions[0].State)
	})

	t.Run("ReplayCreatesNothing", func(t *testing.T) {
		t.Parallel()
		// Ensure matching is idempotent: the same resolution twice links once.
		b := setupPipeline(t, storetest.Policy{Notify: true})
		b.addFan(t, "test-u1", "p-1")
		r := resolution("wwtestcorp", "wmtest1", "p-1")
		links, err := b.db.RecordResolution(t.Context(), r)
		require.NoError(t, err)
		require.Len(t, links, 1)

		links, err = b.db.RecordResolution(t.Context(), r)
		require.NoError(t, err)
		require.Empty(t, links)
		require.Equal(t, int64(1), b.links(t))
		require.Equal(t, int64(1), b.outbox(t))
		require.Equal(t, int64(1), b.jobCount(t, storetest.JobNotification))
		require.Equal(t, int64(1), b.mustCount(t, `SELECT count(*) FROM resolutions`))
	})

	t.Run("ConcurrentBothOrdersLinkOnce", func(t *testing.T) {
		t.Parallel()
		// Ensure a resolution and a registration of the same pending_id that
		// race still link exactly once: one of them must see the other.
		b := setupPipeline(t, storetest.Policy{})
		const n = 10
		fans := make([]store.FanInput, n)
		for i := range fans {
			fans[i] = store.FanInput{UnionID: fmt.Sprintf("test-u%d", i), OpenID: "o"}
		}
		_, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			created int
			errs    []error
		)
		// add counts links, and checks each caller got only its own (the
		// resolutions are group-committed, so answers must not be mixed up).
		add := func(pid string, links []store.Link, err error) {
			mu.Lock()
			defer mu.Unlock()
			created += len(links)
			if err != nil {
				errs = append(errs, err)
			}
			for _, l := range links {
				if l.PendingID != pid || l.ExternalUserID != "wm-"+pid {
					errs = append(errs, fmt.Errorf("caller of %s got link %+v", pid, l))
				}
			}
		}
		for i, f := range fans {
			pid := fmt.Sprintf("p-%d", i)
			wg.Go(func() {
				links, err := b.db.RecordResolution(context.Background(), resolution("wwtestcorp", "wm-"+pid, pid))
				add(pid, links, err)
			})
			wg.Go(func() {
				links, err := b.db.RecordFanPendingID(context.Background(), f.UnionID, pid)
				add(pid, links, err)
			})
		}
		wg.Wait()
		require.Empty(t, errs)
		require.Equal(t, n, created)
		require.Equal(t, int64(n), b.links(t))
		require.Equal(t, int64(n), b.outbox(t))
	})

	t.Run("MatchesUntilFanPendingIDExpires", func(t *testing.T) {
		t.Parallel()
		// Ensure a pending_id still matches a millisecond before its 90 days end.
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		b.clock.Add(store.PendingIDLifetime - time.Millisecond)
		links, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		require.NoError(t, err)
		require.Len(t, links, 1)
	})

	t.Run("ExpiredFanPendingIDNeverMatches", func(t *testing.T) {
		t.Parallel()
		// Ensure a fan's pending_id older than 90 days links nothing.
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		b.clock.Add(store.PendingIDLifetime)
		links, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		require.NoError(t, err)
		require.Empty(t, links)
		require.Zero(t, b.links(t))
		require.Zero(t, b.outbox(t))
		require.Equal(t, store.ResolutionResolved, b.customer(t, "wwtestcorp", "wmtest1").Resolutions[0].State)
	})

	t.Run("LinksEveryFanWithThePendingIDOnce", func(t *testing.T) {
		t.Parallel()
		// Ensure one customer seen in two chats of a corp is one link, and the
		// same person in two corps is two.
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		r := resolution("wwtestcorp", "wmtest1", "p-1")
		r.ChatID = "wrtestchat1"
		links, err := b.db.RecordResolution(t.Context(), r)
		require.NoError(t, err)
		require.Len(t, links, 1)
		require.Equal(t, "wrtestchat1", links[0].ChatID)
		r.ChatID = "wrtestchat2"
		links, err = b.db.RecordResolution(t.Context(), r)
		require.NoError(t, err)
		require.Empty(t, links)
		links, err = b.db.RecordResolution(t.Context(), resolution("wwtestcorp2", "wmtest9", "p-1"))
		require.NoError(t, err)
		require.Len(t, links, 1)
		require.Equal(t, int64(2), b.links(t))
		require.Equal(t, int64(3), b.mustCount(t, `SELECT count(*) FROM resolutions`))
	})

	t.Run("EventPendingToResolved", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		ev := b.saveEvent(t, store.KindAddExternalContact)
		state, _ := b.eventState(t, ev.ID)
		require.Equal(t, store.EventPending, state)

		r := resolution(ev.CorpID, ev.ExternalUserID, "p-1")
		r.EventID = ev.ID
		_, err := b.db.RecordResolution(t.Context(), r)
		require.NoError(t, err)
		state, _ = b.eventState(t, ev.ID)
		require.Equal(t, store.EventResolved, state)
		require.Equal(t, ev.ID, b.customer(t, ev.CorpID, ev.ExternalUserID).Resolutions[0].EventID)
	})

	t.Run("EventPendingToUnmatched", func(t *testing.T) {
		t.Parallel()
		// Ensure an answer without a pending_id leaves the customer unmatched.
		b := setupPipeline(t, storetest.Policy{})
		ev := b.saveEvent(t, store.KindAddExternalContact)
		r := resolution(ev.CorpID, ev.ExternalUserID, "")
		r.EventID, r.Reason = ev.ID, "no pending_id after one delayed retry"
		links, err := b.db.RecordResolution(t.Context(), r)
		require.NoError(t, err)
		require.Empty(t, links)
		state, reason := b.eventState(t, ev.ID)
		require.Equal(t, store.EventUnmatched, state)
		require.Equal(t, r.Reason, reason)
		c := b.customer(t, ev.CorpID, ev.ExternalUserID)
		require.Equal(t, store.ResolutionUnmatched, c.Resolutions[0].State)
		require.Empty(t, c.Resolutions[0].PendingID)
	})

	t.Run("EventPendingToFailed", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		ev := b.saveEvent(t, store.KindAddExternalContact)
		r := resolution(ev.CorpID, ev.ExternalUserID, "")
		r.EventID, r.Failed, r.Reason = ev.ID, true, "wecom: errcode 40096"
		_, err := b.db.RecordResolution(t.Context(), r)
		require.NoError(t, err)
		state, reason := b.eventState(t, ev.ID)
		require.Equal(t, store.EventFailed, state)
		require.Equal(t, "wecom: errcode 40096", reason)
		require.Equal(t, store.ResolutionFailed, b.customer(t, ev.CorpID, ev.ExternalUserID).Resolutions[0].State)
	})

	t.Run("ChatEventStaysResolvedOnceAMemberResolved", func(t *testing.T) {
		t.Parallel()
		// Ensure a chat event's later members (one job each) cannot undo a resolved member.
		b := setupPipeline(t, storetest.Policy{})
		ev := b.saveEvent(t, store.KindAddMember)
		require.Len(t, ev.Members, 2)
		member := func(i int, pendingID string, failed bool) {
			r := resolution(ev.CorpID, ev.Members[i], pendingID)
			r.ChatID, r.EventID, r.Failed = ev.ChatID, ev.ID, failed
			if failed {
				r.Reason = "gave up"
			}
			_, err := b.db.RecordResolution(t.Context(), r)
			require.NoError(t, err)
		}
		member(0, "p-1", false)
		member(1, "", true)
		state, _ := b.eventState(t, ev.ID)
		require.Equal(t, store.EventResolved, state, "failed member")
		member(1, "", false)
		state, _ = b.eventState(t, ev.ID)
		require.Equal(t, store.EventResolved, state, "unmatched member")
	})

	t.Run("ChatEventResolvesAfterAFailedMember", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		ev := b.saveEvent(t, store.KindAddMember)
		r := resolution(ev.CorpID, ev.Members[0], "")
		r.ChatID, r.EventID, r.Failed, r.Reason = ev.ChatID, ev.ID, true, "gave up"
		_, err := b.db.RecordResolution(t.Context(), r)
		require.NoError(t, err)
		state, _ := b.eventState(t, ev.ID)
		require.Equal(t, store.EventFailed, state)

		r = resolution(ev.CorpID, ev.Members[1], "p-2")
		r.ChatID, r.EventID = ev.ChatID, ev.ID
		_, err = b.db.RecordResolution(t.Context(), r)
		require.NoError(t, err)
		state, reason := b.eventState(t, ev.ID)
		require.Equal(t, store.EventResolved, state)
		require.Empty(t, reason)
	})

	t.Run("FailureKeepsEarlierPendingID", func(t *testing.T) {
		t.Parallel()
		// Ensure a later failed lookup never wipes a pending_id found earlier,
		// so a fan registered afterwards still links.
		b := setupPipeline(t, storetest.Policy{})
		_, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		require.NoError(t, err)
		failed := resolution("wwtestcorp", "wmtest1", "")
		failed.Failed, failed.Reason = true, "wecom: errcode -1"
		_, err = b.db.RecordResolution(t.Context(), failed)
		require.NoError(t, err)

		c := b.customer(t, "wwtestcorp", "wmtest1")
		require.Len(t, c.Resolutions, 1)
		require.Equal(t, "p-1", c.Resolutions[0].PendingID)
		require.Equal(t, store.ResolutionResolved, c.Resolutions[0].State)

		links := b.addFan(t, "test-u1", "p-1")
		require.Len(t, links, 1)
		require.Equal(t, "wmtest1", links[0].ExternalUserID)
	})

	t.Run("FailureKeepsMatchedState", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		_, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		require.NoError(t, err)
		failed := resolution("wwtestcorp", "wmtest1", "")
		failed.Failed, failed.Reason = true, "gave up"
		_, err = b.db.RecordResolution(t.Context(), failed)
		require.NoError(t, err)
		c := b.customer(t, "wwtestcorp", "wmtest1")
		require.Equal(t, store.ResolutionMatched, c.Resolutions[0].State)
		require.Equal(t, "p-1", c.Resolutions[0].PendingID)
		require.Len(t, c.Links, 1)
		require.True(t, c.Links[0].Active)
	})
}

func TestDB_RecordFanPendingID(t *testing.T) {
	t.Parallel()

	t.Run("LinksCustomerResolvedEarlier", func(t *testing.T) {
		t.Parallel()
		// Ensure a fan registered after its customer was resolved links at once.
		b := setupPipeline(t, storetest.Policy{})
		links, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		require.NoError(t, err)
		require.Empty(t, links)
		require.Equal(t, store.ResolutionResolved, b.customer(t, "wwtestcorp", "wmtest1").Resolutions[0].State)

		b.clock.Add(time.Hour)
		links = b.addFan(t, "test-u1", "p-1")
		require.Len(t, links, 1)
		l := links[0]
		require.Equal(t, "test-u1", l.UnionID)
		require.Equal(t, "o-test-u1", l.OpenID)
		require.Equal(t, "p-1", l.PendingID)
		require.Equal(t, "wwtestcorp", l.CorpID)
		require.Equal(t, "wmtest1", l.ExternalUserID)
		require.Equal(t, "test-staff", l.UserID)
		require.True(t, l.Active)
		require.True(t, l.MatchedAt.Equal(pipelineStart.Add(time.Hour)))
		require.Equal(t, []string{"link_created"}, b.outboxKinds(t))
		require.Equal(t, store.ResolutionMatched, b.customer(t, "wwtestcorp", "wmtest1").Resolutions[0].State)

		fan, err := b.db.FindFan(t.Context(), "test-u1")
		require.NoError(t, err)
		require.Equal(t, store.FanRegistered, fan.State)
	})

	t.Run("ReplayCreatesNothing", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{Notify: true})
		_, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		require.NoError(t, err)
		require.Len(t, b.addFan(t, "test-u1", "p-1"), 1)

		links, err := b.db.RecordFanPendingID(t.Context(), "test-u1", "p-1")
		require.NoError(t, err)
		require.Empty(t, links)
		require.Equal(t, int64(1), b.links(t))
		require.Equal(t, int64(1), b.outbox(t))
		require.Equal(t, int64(1), b.jobCount(t, storetest.JobNotification))
		require.Equal(t, int64(1), b.mustCount(t, `SELECT count(*) FROM fan_pending_ids`))
	})

	t.Run("ExpiredResolutionNeverMatches", func(t *testing.T) {
		t.Parallel()
		// Ensure a customer resolved more than 90 days ago is not linked.
		b := setupPipeline(t, storetest.Policy{})
		_, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		require.NoError(t, err)
		b.clock.Add(store.PendingIDLifetime)
		require.Empty(t, b.addFan(t, "test-u1", "p-1"))
		require.Zero(t, b.links(t))
		require.Zero(t, b.outbox(t))
		require.Equal(t, store.ResolutionResolved, b.customer(t, "wwtestcorp", "wmtest1").Resolutions[0].State,
			"an expired resolution is not marked matched")
	})

	t.Run("OnlyLiveResolutionsMarkedMatched", func(t *testing.T) {
		t.Parallel()
		// Ensure that when the same person was resolved in two corps, 90 days
		// apart, only the live resolution links and is marked matched.
		b := setupPipeline(t, storetest.Policy{})
		_, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp1", "wmtest1", "p-1"))
		require.NoError(t, err)
		b.clock.Add(store.PendingIDLifetime)
		_, err = b.db.RecordResolution(t.Context(), resolution("wwtestcorp2", "wmtest2", "p-1"))
		require.NoError(t, err)

		links := b.addFan(t, "test-u1", "p-1")
		require.Len(t, links, 1)
		require.Equal(t, "wwtestcorp2", links[0].CorpID)
		require.Equal(t, store.ResolutionMatched, b.customer(t, "wwtestcorp2", "wmtest2").Resolutions[0].State)
		require.Equal(t, store.ResolutionResolved, b.customer(t, "wwtestcorp1", "wmtest1").Resolutions[0].State,
			"the expired resolution links nothing, so it is not matched")
	})

	t.Run("ErrNotFoundForUnknownFan", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{PendingIDs: true})
		_, err := b.db.RecordFanPendingID(t.Context(), "test-nobody", "p-1")
		require.ErrorIs(t, err, store.ErrNotFound)
		require.Zero(t, b.mustCount(t, `SELECT count(*) FROM fan_pending_ids`))
		require.Zero(t, b.mustCount(t, `SELECT count(*) FROM river_job`))
	})

	t.Run("ErrInvalidForEmptyPendingID", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "")
		_, err := b.db.RecordFanPendingID(t.Context(), "test-u1", "")
		require.ErrorIs(t, err, store.ErrInvalid)
	})

	t.Run("PolicyJobsCommitWithIt", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{PendingIDs: true})
		b.addFan(t, "test-u1", "")
		_, err := b.db.RecordFanPendingID(t.Context(), "test-u1", "p-1")
		require.NoError(t, err)
		require.Equal(t, []storetest.Job{{What: storetest.JobPendingID, Subject: "test-u1"}}, policyJobs(t, b.db))
	})

	t.Run("NoPolicyJobsNoJob", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		require.Zero(t, b.mustCount(t, `SELECT count(*) FROM river_job`))
	})
}

func TestDB_EndLinks(t *testing.T) {
	t.Parallel()

	// linked returns a bundle whose fan test-u1 is linked to wwtestcorp/wmtest1.
	linked := func(t *testing.T, notify bool) (*pipelineBundle, store.Link) {
		t.Helper()
		b := setupPipeline(t, storetest.Policy{Notify: notify})
		b.addFan(t, "test-u1", "p-1")
		links, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		require.NoError(t, err)
		require.Len(t, links, 1)
		return b, links[0]
	}

	t.Run("OtherStaffRemovalKeepsLink", func(t *testing.T) {
		t.Parallel()
		// Ensure a removal between the customer and another staff member ends
		// nothing, and one with the staff member the link was made through does.
		b, l := linked(t, false)
		ended, err := b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1", UserID: "other-staff"})
		require.NoError(t, err)
		require.Empty(t, ended)

		ended, err = b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1", UserID: "test-staff"})
		require.NoError(t, err)
		require.Len(t, ended, 1)
		require.Equal(t, l.ID, ended[0].ID)
	})

	t.Run("MarksInactiveAndKeepsRow", func(t *testing.T) {
		t.Parallel()
		b, l := linked(t, false)
		ev := b.saveEvent(t, store.KindDelExternalContact)
		b.clock.Add(time.Hour)

		ended, err := b.db.EndLinks(t.Context(), store.EndLink{EventID: ev.ID, CorpID: "wwtestcorp", ExternalUserID: "wmtest1"})
		require.NoError(t, err)
		require.Len(t, ended, 1)
		require.Equal(t, l.ID, ended[0].ID)
		require.False(t, ended[0].Active)
		require.NotNil(t, ended[0].EndedAt)
		require.True(t, ended[0].EndedAt.Equal(pipelineStart.Add(time.Hour)))
		require.Equal(t, store.KindDelExternalContact, ended[0].EndReason)

		found, err := b.db.FindLinks(t.Context(), store.LinkFilter{UnionID: "test-u1"})
		require.NoError(t, err)
		require.Len(t, found, 1)
		require.False(t, found[0].Active)
		require.Equal(t, []string{"link_created", "link_ended"}, b.outboxKinds(t))
		state, _ := b.eventState(t, ev.ID)
		require.Equal(t, store.EventResolved, state)
	})

	t.Run("WithoutEventReasonIsRemoved", func(t *testing.T) {
		t.Parallel()
		b, _ := linked(t, false)
		ended, err := b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"})
		require.NoError(t, err)
		require.Len(t, ended, 1)
		require.Equal(t, "removed", ended[0].EndReason)
	})

	t.Run("NotEndedTwice", func(t *testing.T) {
		t.Parallel()
		b, _ := linked(t, true)
		e := store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"}
		ended, err := b.db.EndLinks(t.Context(), e)
		require.NoError(t, err)
		require.Len(t, ended, 1)
		b.clock.Add(time.Hour)
		ended, err = b.db.EndLinks(t.Context(), e)
		require.NoError(t, err)
		require.Empty(t, ended)
		require.Equal(t, []string{"link_created", "link_ended"}, b.outboxKinds(t))
		require.Equal(t, int64(2), b.jobCount(t, storetest.JobNotification))
		found, err := b.db.FindLinks(t.Context(), store.LinkFilter{})
		require.NoError(t, err)
		require.True(t, found[0].EndedAt.Equal(pipelineStart), "the first end time stands")
	})

	t.Run("UnknownCustomerEndsNothing", func(t *testing.T) {
		t.Parallel()
		b, _ := linked(t, false)
		ended, err := b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest-other"})
		require.NoError(t, err)
		require.Empty(t, ended)
		require.Equal(t, int64(1), b.outbox(t))
	})

	t.Run("ReAddReactivates", func(t *testing.T) {
		t.Parallel()
		// Ensure a customer added again after a removal gets the same link back,
		// active, with a new link_created notification.
		b, l := linked(t, false)
		_, err := b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"})
		require.NoError(t, err)
		b.clock.Add(time.Hour)

		r := resolution("wwtestcorp", "wmtest1", "p-1")
		r.UserID = "test-staff2"
		links, err := b.db.RecordResolution(t.Context(), r)
		require.NoError(t, err)
		require.Len(t, links, 1)
		require.Equal(t, l.ID, links[0].ID)
		require.True(t, links[0].Active)
		require.Nil(t, links[0].EndedAt)
		require.Empty(t, links[0].EndReason)
		require.Equal(t, "test-staff2", links[0].UserID)
		require.True(t, links[0].MatchedAt.Equal(pipelineStart.Add(time.Hour)))
		require.Equal(t, int64(1), b.links(t))
		require.Equal(t, []string{"link_created", "link_ended", "link_created"}, b.outboxKinds(t))

		// And it can end again.
		ended, err := b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"})
		require.NoError(t, err)
		require.Len(t, ended, 1)
	})
}

func TestDB_RegisterFans(t *testing.T) {
	t.Parallel()

	fans := []store.FanInput{{UnionID: "test-u1", OpenID: "o-1"}, {UnionID: "test-u2", OpenID: "o-2"}}

	type jobRow struct {
		Args     storetest.Job
		Priority int
	}
	registerJobs := func(t *testing.T, b *pipelineBundle) []jobRow {
		t.Helper()
		res, err := b.db.River().JobList(t.Context(), river.NewJobListParams().Kinds(storetest.Job{}.Kind()))
		require.NoError(t, err)
		var out []jobRow
		for _, row := range res.Jobs {
			j := jobRow{Priority: row.Priority}
			require.NoError(t, json.Unmarshal(row.EncodedArgs, &j.Args))
			require.Equal(t, storetest.JobRegister, j.Args.What)
			out = append(out, j)
		}
		return out
	}

	t.Run("QueuesOneJobPerFan", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		res, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{Priority: 2})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 2}, res)
		require.Equal(t, []jobRow{
			{Args: storetest.Job{What: storetest.JobRegister, Subject: "test-u1"}, Priority: 2},
			{Args: storetest.Job{What: storetest.JobRegister, Subject: "test-u2"}, Priority: 2},
		}, registerJobs(t, b))
		fan, err := b.db.FindFan(t.Context(), "test-u1")
		require.NoError(t, err)
		require.Equal(t, store.FanNew, fan.State)
		require.Equal(t, "o-1", fan.OpenID)
		require.True(t, fan.CreatedAt.Equal(pipelineStart))
	})

	t.Run("SecondCallSkipsQueuedFans", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		_, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{Priority: 3})
		require.NoError(t, err)
		res, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{Priority: 3})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Skipped: 2}, res)
		require.Len(t, registerJobs(t, b), 2)
		n, err := b.db.CountJobs(t.Context(), storetest.Job{}.Kind())
		require.NoError(t, err)
		require.Equal(t, int64(2), n)
	})

	t.Run("DuplicateInOneCallQueuedOnce", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		res, err := b.db.RegisterFans(t.Context(), []store.FanInput{fans[0], fans[0]}, store.RegisterOpts{})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 1, Skipped: 1}, res)
		require.Len(t, registerJobs(t, b), 1)
	})

	t.Run("SkipsFanWithLivePendingID", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		res, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 1, Skipped: 1}, res)
		jobs := registerJobs(t, b)
		require.Len(t, jobs, 1)
		require.Equal(t, "test-u2", jobs[0].Args.Subject)
		require.Equal(t, 3, jobs[0].Priority, "default priority")
	})

	t.Run("QueuesFanWhosePendingIDExpired", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		b.clock.Add(store.PendingIDLifetime)
		res, err := b.db.RegisterFans(t.Context(), fans[:1], store.RegisterOpts{})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 1}, res)
	})

	t.Run("NoJobInsertsNoJob", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		res, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 2}, res)
		require.Zero(t, b.mustCount(t, `SELECT count(*) FROM river_job`))
		require.Equal(t, int64(2), b.mustCount(t, `SELECT count(*) FROM fans`))
	})

	t.Run("RenewRequeuesRegisteredFan", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		res, err := b.db.RegisterFans(t.Context(), fans[:1], store.RegisterOpts{Priority: 4, Renew: true})
		require.NoError(t, err)
		require.Equal(t, store.RegisterResult{Queued: 1}, res)
		jobs := registerJobs(t, b)
		require.Len(t, jobs, 1)
		require.Equal(t, 4, jobs[0].Priority)
	})

	t.Run("UpdatesChangedOpenID", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "")
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-u1", OpenID: "o-new"}}, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)
		fan, err := b.db.FindFan(t.Context(), "test-u1")
		require.NoError(t, err)
		require.Equal(t, "o-new", fan.OpenID)
		require.Equal(t, int64(1), b.mustCount(t, `SELECT count(*) FROM fans`))
	})

	t.Run("ErrInvalidWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		for name, bad := range map[string]store.FanInput{
			"NoUnionID": {OpenID: "o-3"},
			"NoOpenID":  {UnionID: "test-u3"},
			"TooLong":   {UnionID: strings.Repeat("u", 129), OpenID: "o-3"},
		} {
			_, err := b.db.RegisterFans(t.Context(), append(fans[:2:2], bad), store.RegisterOpts{})
			require.ErrorIs(t, err, store.ErrInvalid, name)
		}
		require.Zero(t, b.mustCount(t, `SELECT count(*) FROM fans`))
		require.Zero(t, b.mustCount(t, `SELECT count(*) FROM river_job`))
	})
}

func TestDB_LinkExisting(t *testing.T) {
	t.Parallel()

	t.Run("LinksReportedCustomersOnce", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{Notify: true})
		b.addFan(t, "test-u1", "p-1")
		found := []store.CorpCustomer{{CorpID: "wwtestcorp1", ExternalUserID: "wmtest1"}, {CorpID: "wwtestcorp2", ExternalUserID: "wmtest2"}}
		links, err := b.db.LinkExisting(t.Context(), "test-u1", found)
		require.NoError(t, err)
		require.Len(t, links, 2)
		for i, l := range links {
			require.Equal(t, "test-u1", l.UnionID)
			require.Equal(t, "o-test-u1", l.OpenID)
			require.Equal(t, "p-1", l.PendingID)
			require.Equal(t, found[i].CorpID, l.CorpID)
			require.Equal(t, found[i].ExternalUserID, l.ExternalUserID)
			require.True(t, l.Active)
		}
		require.Equal(t, int64(2), b.jobCount(t, storetest.JobNotification))

		links, err = b.db.LinkExisting(t.Context(), "test-u1", found)
		require.NoError(t, err)
		require.Empty(t, links)
		require.Equal(t, int64(2), b.links(t))
		require.Equal(t, int64(2), b.outbox(t))
	})

	t.Run("FanWithoutLivePendingID", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		b.clock.Add(store.PendingIDLifetime)
		links, err := b.db.LinkExisting(t.Context(), "test-u1", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"}})
		require.NoError(t, err)
		require.Len(t, links, 1)
		require.Empty(t, links[0].PendingID)
	})

	t.Run("ErrNotFoundForUnknownFan", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		_, err := b.db.LinkExisting(t.Context(), "test-nobody", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"}})
		require.ErrorIs(t, err, store.ErrNotFound)
		require.Zero(t, b.links(t))
	})
}

func TestDB_FailFan(t *testing.T) {
	t.Parallel()

	t.Run("RecordsReason", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "")
		require.NoError(t, b.db.FailFan(t.Context(), "test-u1", "wecom: errcode 610014: invalid unionid"))
		fan, err := b.db.FindFan(t.Context(), "test-u1")
		require.NoError(t, err)
		require.Equal(t, store.FanFailed, fan.State)
		require.Equal(t, "wecom: errcode 610014: invalid unionid", fan.LastError)
	})

	t.Run("TruncatesLongReason", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "")
		require.NoError(t, b.db.FailFan(t.Context(), "test-u1", strings.Repeat("x", store.MaxFieldLen+10)))
		fan, err := b.db.FindFan(t.Context(), "test-u1")
		require.NoError(t, err)
		require.Len(t, fan.LastError, store.MaxFieldLen)
	})

	t.Run("RegistrationClearsFailure", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "")
		require.NoError(t, b.db.FailFan(t.Context(), "test-u1", "boom"))
		_, err := b.db.RecordFanPendingID(t.Context(), "test-u1", "p-1")
		require.NoError(t, err)
		fan, err := b.db.FindFan(t.Context(), "test-u1")
		require.NoError(t, err)
		require.Equal(t, store.FanRegistered, fan.State)
		require.Empty(t, fan.LastError)
	})
}

func TestDB_FindFan(t *testing.T) {
	t.Parallel()

	t.Run("PendingIDsNewestFirst", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		b.clock.Add(24 * time.Hour)
		_, err := b.db.RecordFanPendingID(t.Context(), "test-u1", "p-2")
		require.NoError(t, err)
		_, err = b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-2"))
		require.NoError(t, err)

		fan, err := b.db.FindFan(t.Context(), "test-u1")
		require.NoError(t, err)
		require.Equal(t, "test-u1", fan.UnionID)
		require.Equal(t, store.FanRegistered, fan.State)
		require.Len(t, fan.PendingIDs, 2)
		require.Equal(t, "p-2", fan.PendingIDs[0].PendingID)
		require.Equal(t, "p-1", fan.PendingIDs[1].PendingID)
		issued := pipelineStart.Add(24 * time.Hour)
		require.True(t, fan.PendingIDs[0].IssuedAt.Equal(issued))
		require.True(t, fan.PendingIDs[0].ExpiresAt.Equal(issued.Add(store.PendingIDLifetime)))
		require.Equal(t, "p-2", fan.PendingID)
		require.NotNil(t, fan.ExpiresAt)
		require.True(t, fan.ExpiresAt.Equal(issued.Add(store.PendingIDLifetime)))
		require.Len(t, fan.Links, 1)
		require.Equal(t, "wmtest1", fan.Links[0].ExternalUserID)
	})

	t.Run("NoLivePendingIDShown", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		b.clock.Add(store.PendingIDLifetime)
		fan, err := b.db.FindFan(t.Context(), "test-u1")
		require.NoError(t, err)
		require.Empty(t, fan.PendingID)
		require.Nil(t, fan.ExpiresAt)
		require.Len(t, fan.PendingIDs, 1)
	})

	t.Run("NewFanHasEmptyLists", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "")
		fan, err := b.db.FindFan(t.Context(), "test-u1")
		require.NoError(t, err)
		require.NotNil(t, fan.PendingIDs)
		require.Empty(t, fan.PendingIDs)
		require.NotNil(t, fan.Links)
		require.Empty(t, fan.Links)
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		_, err := b.db.FindFan(t.Context(), "test-nobody")
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}

func TestDB_FindLinks(t *testing.T) {
	t.Parallel()

	// Five links, one hour apart, newest last:
	// 1 u1/c1/e1, 2 u1/c2/e2, 3 u2/c1/e3, 4 u2/c2/e4, 5 u3/c1/e5.
	b := setupPipeline(t, storetest.Policy{})
	type spec struct{ union, corp, ext string }
	specs := []spec{
		{"test-u1", "wwtestc1", "wm1"}, {"test-u1", "wwtestc2", "wm2"},
		{"test-u2", "wwtestc1", "wm3"}, {"test-u2", "wwtestc2", "wm4"}, {"test-u3", "wwtestc1", "wm5"},
	}
	for _, u := range []string{"test-u1", "test-u2", "test-u3"} {
		b.addFan(t, u, "p-"+u)
	}
	ids := make([]int64, len(specs))
	for i, s := range specs {
		b.clock.Add(time.Hour)
		links, err := b.db.RecordResolution(t.Context(), resolution(s.corp, s.ext, "p-"+s.union))
		require.NoError(t, err)
		require.Len(t, links, 1)
		ids[i] = links[0].ID
	}
	externals := func(links []store.Link) []string {
		var out []string
		for _, l := range links {
			out = append(out, l.ExternalUserID)
		}
		return out
	}

	for name, tc := range map[string]struct {
		filter store.LinkFilter
		want   []string
	}{
		"AllNewestFirst":   {store.LinkFilter{}, []string{"wm5", "wm4", "wm3", "wm2", "wm1"}},
		"ByUnionID":        {store.LinkFilter{UnionID: "test-u2"}, []string{"wm4", "wm3"}},
		"ByCorp":           {store.LinkFilter{CorpID: "wwtestc1"}, []string{"wm5", "wm3", "wm1"}},
		"ByExternal":       {store.LinkFilter{ExternalUserID: "wm2"}, []string{"wm2"}},
		"ByCorpAndUnionID": {store.LinkFilter{CorpID: "wwtestc2", UnionID: "test-u1"}, []string{"wm2"}},
		"SinceIsInclusive": {store.LinkFilter{Since: pipelineStart.Add(4 * time.Hour)}, []string{"wm5", "wm4"}},
		"Limit":            {store.LinkFilter{Limit: 2}, []string{"wm5", "wm4"}},
		"BeforeID":         {store.LinkFilter{BeforeID: ids[3], Limit: 2}, []string{"wm3", "wm2"}},
		"BeforeIDWithCorp": {store.LinkFilter{BeforeID: ids[4], CorpID: "wwtestc1"}, []string{"wm3", "wm1"}},
		"NoMatch":          {store.LinkFilter{UnionID: "test-nobody"}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			links, err := b.db.FindLinks(t.Context(), tc.filter)
			require.NoError(t, err)
			require.Equal(t, tc.want, externals(links))
		})
	}

	t.Run("CursorPagesThroughAll", func(t *testing.T) {
		var (
			got    []string
			before int64
		)
		for page := 0; page < 10; page++ {
			links, err := b.db.FindLinks(t.Context(), store.LinkFilter{Limit: 2, BeforeID: before})
			require.NoError(t, err)
			got = append(got, externals(links)...)
			if len(links) < 2 {
				break
			}
			before = links[len(links)-1].ID
		}
		require.Equal(t, []string{"wm5", "wm4", "wm3", "wm2", "wm1"}, got)
	})
}

func TestDB_FindCustomer(t *testing.T) {
	t.Parallel()

	t.Run("ErrNotFound", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		_, err := b.db.FindCustomer(t.Context(), "wwtestcorp", "wmtest-nobody")
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("ResolutionsAndLinks", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		r := resolution("wwtestcorp", "wmtest1", "p-1")
		r.Reason = "ok"
		_, err := b.db.RecordResolution(t.Context(), r)
		require.NoError(t, err)
		r.ChatID = "wrtestchat"
		_, err = b.db.RecordResolution(t.Context(), r)
		require.NoError(t, err)

		c := b.customer(t, "wwtestcorp", "wmtest1")
		require.Equal(t, "wwtestcorp", c.CorpID)
		require.Equal(t, "wmtest1", c.ExternalUserID)
		require.Len(t, c.Resolutions, 2)
		require.Empty(t, c.Resolutions[0].ChatID)
		require.Equal(t, "wrtestchat", c.Resolutions[1].ChatID)
		for _, res := range c.Resolutions {
			require.Equal(t, "p-1", res.PendingID)
			require.Equal(t, "test-staff", res.UserID)
			require.Equal(t, store.ResolutionMatched, res.State)
			require.True(t, res.ResolvedAt.Equal(pipelineStart))
		}
		require.Len(t, c.Links, 1)
	})

	t.Run("ResolutionWithoutLink", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		_, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", ""))
		require.NoError(t, err)
		c := b.customer(t, "wwtestcorp", "wmtest1")
		require.Len(t, c.Resolutions, 1)
		require.NotNil(t, c.Links)
		require.Empty(t, c.Links)
	})
}

func TestDB_FansToRenew(t *testing.T) {
	t.Parallel()

	b := setupPipeline(t, storetest.Policy{})
	// test-a: registered at start, unmatched; expires at start+90d.
	b.addFan(t, "test-a", "p-a")
	// test-b: registered at start, linked.
	b.addFan(t, "test-b", "p-b")
	_, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest-b", "p-b"))
	require.NoError(t, err)
	// test-c: registered ten days later; test-new never registered; test-failed failed.
	b.clock.Add(10 * 24 * time.Hour)
	b.addFan(t, "test-c", "p-c")
	b.addFan(t, "test-new", "")
	b.addFan(t, "test-failed", "")
	require.NoError(t, b.db.FailFan(t.Context(), "test-failed", "boom"))
	expiryA := pipelineStart.Add(store.PendingIDLifetime)

	unionIDs := func(fans []store.FanInput) []string {
		var out []string
		for _, f := range fans {
			out = append(out, f.UnionID)
		}
		return out
	}

	t.Run("ExpiringUnmatchedOnly", func(t *testing.T) {
		fans, err := b.db.FansToRenew(t.Context(), expiryA.Add(time.Millisecond), 100)
		require.NoError(t, err)
		require.Equal(t, []store.FanInput{{UnionID: "test-a", OpenID: "o-test-a"}}, fans)
	})

	t.Run("BeforeIsExclusive", func(t *testing.T) {
		fans, err := b.db.FansToRenew(t.Context(), expiryA, 100)
		require.NoError(t, err)
		require.Empty(t, fans)
	})

	t.Run("OldestExpiryFirstAndLimit", func(t *testing.T) {
		far := pipelineStart.Add(365 * 24 * time.Hour)
		fans, err := b.db.FansToRenew(t.Context(), far, 100)
		require.NoError(t, err)
		require.Equal(t, []string{"test-a", "test-c"}, unionIDs(fans))
		fans, err = b.db.FansToRenew(t.Context(), far, 1)
		require.NoError(t, err)
		require.Equal(t, []string{"test-a"}, unionIDs(fans))
	})
}

func TestDB_FansToRenew_EndedLinkRenews(t *testing.T) {
	t.Parallel()
	// Ensure a fan whose only link ended is renewed again.
	b := setupPipeline(t, storetest.Policy{})
	b.addFan(t, "test-b", "p-b")
	_, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest-b", "p-b"))
	require.NoError(t, err)
	before := pipelineStart.Add(store.PendingIDLifetime + time.Hour)
	fans, err := b.db.FansToRenew(t.Context(), before, 10)
	require.NoError(t, err)
	require.Empty(t, fans)
	_, err = b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest-b"})
	require.NoError(t, err)
	fans, err = b.db.FansToRenew(t.Context(), before, 10)
	require.NoError(t, err)
	require.Len(t, fans, 1)
}

func TestDB_CountJobs(t *testing.T) {
	t.Parallel()
	b := setupPipeline(t, storetest.Policy{})
	n, err := b.db.CountJobs(t.Context(), storetest.Job{}.Kind())
	require.NoError(t, err)
	require.Zero(t, n)

	_, err = b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-u1", OpenID: "o"}, {UnionID: "test-u2", OpenID: "o"}}, store.RegisterOpts{})
	require.NoError(t, err)
	_, err = b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-u3", OpenID: "o"}}, store.RegisterOpts{NoJob: true})
	require.NoError(t, err)
	// A finished register job no longer counts.
	_, err = b.db.SQL().ExecContext(t.Context(), `UPDATE river_job SET state = 'completed', finalized_at = datetime('now') WHERE args ->> 'subject' = 'test-u1'`)
	require.NoError(t, err)
	n, err = b.db.CountJobs(t.Context(), storetest.Job{}.Kind())
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

func TestDB_Outbox(t *testing.T) {
	t.Parallel()

	// setupOutbox links a customer, ends the link an hour later and returns the link.
	setupOutbox := func(t *testing.T) (*pipelineBundle, store.Link) {
		t.Helper()
		b := setupPipeline(t, storetest.Policy{})
		b.addFan(t, "test-u1", "p-1")
		links, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		require.NoError(t, err)
		b.clock.Add(time.Hour)
		_, err = b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"})
		require.NoError(t, err)
		return b, links[0]
	}

	t.Run("OldestFirstWithSnapshot", func(t *testing.T) {
		t.Parallel()
		b, l := setupOutbox(t)
		o, err := b.db.NextOutbox(t.Context(), l.ID)
		require.NoError(t, err)
		require.Equal(t, l.ID, o.LinkID)
		require.Equal(t, "link_created", o.Kind)
		require.Zero(t, o.Attempts)
		p := o
		require.True(t, p.OccurredAt.Equal(pipelineStart))
		require.Equal(t, l.ID, p.Link.ID)
		require.Equal(t, "test-u1", p.Link.UnionID)
		require.Equal(t, "wmtest1", p.Link.ExternalUserID)
		require.True(t, p.Link.Active)
	})

	t.Run("FailedAttemptKeepsHead", func(t *testing.T) {
		t.Parallel()
		b, l := setupOutbox(t)
		o, err := b.db.NextOutbox(t.Context(), l.ID)
		require.NoError(t, err)
		require.NoError(t, b.db.MarkOutbox(t.Context(), o.ID, "webhook: status 500"))
		again, err := b.db.NextOutbox(t.Context(), l.ID)
		require.NoError(t, err)
		require.Equal(t, o.ID, again.ID)
		require.Equal(t, 1, again.Attempts)
		require.Equal(t, "webhook: status 500",
			b.mustStr(t, `SELECT last_error FROM outbox WHERE id = ?`, o.ID))
	})

	t.Run("DeliveredMovesToNext", func(t *testing.T) {
		t.Parallel()
		b, l := setupOutbox(t)
		first, err := b.db.NextOutbox(t.Context(), l.ID)
		require.NoError(t, err)
		require.NoError(t, b.db.MarkOutbox(t.Context(), first.ID, ""))
		second, err := b.db.NextOutbox(t.Context(), l.ID)
		require.NoError(t, err)
		require.Greater(t, second.ID, first.ID)
		require.Equal(t, "link_ended", second.Kind)
		p := second
		require.True(t, p.OccurredAt.Equal(pipelineStart.Add(time.Hour)))
		require.False(t, p.Link.Active)
		require.NotNil(t, p.Link.EndedAt)

		require.NoError(t, b.db.MarkOutbox(t.Context(), second.ID, ""))
		_, err = b.db.NextOutbox(t.Context(), l.ID)
		require.ErrorIs(t, err, store.ErrNotFound)
		require.Equal(t, int64(2), b.mustCount(t, `SELECT count(*) FROM outbox WHERE delivered_at IS NOT NULL`))
	})

	t.Run("ErrNotFoundForUnknownLink", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		_, err := b.db.NextOutbox(t.Context(), 12345)
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("QueuesNotifyJobWithEachRow", func(t *testing.T) {
		t.Parallel()
		// Ensure, with Notify, every outbox row commits with a notify job for its link.
		b := setupPipeline(t, storetest.Policy{Notify: true})
		b.addFan(t, "test-u1", "p-1")
		links, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		require.NoError(t, err)
		_, err = b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"})
		require.NoError(t, err)
		_, err = b.db.LinkExisting(t.Context(), "test-u1", []store.CorpCustomer{{CorpID: "wwtestcorp2", ExternalUserID: "wmtest2"}})
		require.NoError(t, err)

		require.Equal(t, int64(3), b.outbox(t))
		var got []string
		for _, j := range policyJobs(t, b.db) {
			require.Equal(t, storetest.JobNotification, j.What)
			got = append(got, j.Subject)
		}
		require.Len(t, got, 3)
		first := strconv.FormatInt(links[0].ID, 10)
		require.Equal(t, first, got[0])
		require.Equal(t, first, got[1])
		require.NotEqual(t, first, got[2])
	})

	t.Run("NoNotifyJobsWithoutNotify", func(t *testing.T) {
		t.Parallel()
		b, _ := setupOutbox(t)
		require.Equal(t, int64(2), b.outbox(t))
		require.Zero(t, b.jobCount(t, storetest.JobNotification))
	})
}

func (b *pipelineBundle) mustStr(t *testing.T, query string, args ...any) string {
	t.Helper()
	var s string
	require.NoError(t, b.db.SQL().QueryRowContext(t.Context(), query, args...).Scan(&s))
	return s
}

func TestDB_PipelineStatus(t *testing.T) {
	t.Parallel()

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		st, err := b.db.PipelineStatus(t.Context(), 7*24*time.Hour)
		require.NoError(t, err)
		require.Equal(t, store.PipelineStatus{FailureReasons: map[string]int64{}}, st)
	})

	t.Run("Counts", func(t *testing.T) {
		t.Parallel()
		b := setupPipeline(t, storetest.Policy{})
		// Events: one pending, one resolved, one unmatched, three failed (two reasons).
		b.saveEvent(t, store.KindAddExternalContact)
		settle := func(pendingID string, failed bool, reason string) {
			ev := b.saveEvent(t, store.KindAddExternalContact)
			r := resolution(ev.CorpID, ev.ExternalUserID, pendingID)
			r.EventID, r.Failed, r.Reason = ev.ID, failed, reason
			_, err := b.db.RecordResolution(t.Context(), r)
			require.NoError(t, err)
		}
		settle("p-x", false, "")
		settle("", false, "no pending_id")
		settle("", true, "errcode 40096")
		settle("", true, "errcode 40096")
		settle("", true, "errcode 48002")

		// Fans: expired (registered at start), expiring (85 days ago), valid (now),
		// one never registered; one link ended, one active.
		b.addFan(t, "test-expired", "p-expired")
		b.clock.Add(10 * 24 * time.Hour)
		b.addFan(t, "test-expiring", "p-expiring")
		b.clock.Add(85 * 24 * time.Hour)
		b.addFan(t, "test-valid", "p-valid")
		b.addFan(t, "test-new", "")
		_, err := b.db.LinkExisting(t.Context(), "test-valid", []store.CorpCustomer{{CorpID: "wwtestcorp", ExternalUserID: "wm1"}, {CorpID: "wwtestcorp", ExternalUserID: "wm2"}})
		require.NoError(t, err)
		_, err = b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wm1"})
		require.NoError(t, err)

		st, err := b.db.PipelineStatus(t.Context(), 7*24*time.Hour)
		require.NoError(t, err)
		require.Equal(t, store.PipelineStatus{
			EventsResolved: 1, EventsPending: 1, EventsFailed: 3, EventsUnmatched: 1,
			FansRegistered: 3, FansValid: 2, FansExpiring: 1, FansExpired: 1,
			LinksTotal: 2, LinksActive: 1,
			FailureReasons: map[string]int64{"errcode 40096": 2, "errcode 48002": 1},
		}, st)
	})
}

func TestDB_RecordResolution_FailureIsIsolated(t *testing.T) {
	t.Parallel()
	// Ensure one resolution that fails does not fail the others committed in
	// the same group: a trigger makes the insert of one customer abort.
	b := setupPipeline(t, storetest.Policy{})
	b.addFan(t, "test-u1", "p-1")
	_, err := b.db.SQL().ExecContext(t.Context(), `CREATE TRIGGER boom BEFORE INSERT ON resolutions
		WHEN NEW.external_userid = 'wmboom' BEGIN SELECT RAISE(ABORT, 'boom'); END`)
	require.NoError(t, err)

	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			ext := "wmok" + strconv.Itoa(i)
			if i%2 == 0 {
				ext = "wmboom"
			}
			_, errs[i] = b.db.RecordResolution(t.Context(), resolution("wwtestcorp", ext, "p-"+ext))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 0 {
			require.Error(t, err, "resolution %d", i)
		} else {
			require.NoError(t, err, "resolution %d", i)
		}
	}
	var n int
	require.NoError(t, b.db.SQL().QueryRowContext(t.Context(), `SELECT count(*) FROM resolutions`).Scan(&n))
	require.Equal(t, 10, n)
}
