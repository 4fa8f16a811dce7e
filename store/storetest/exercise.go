package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/internal/fakeclock"
	"github.com/pendinglink/pendinglink/store"
)

// Exercise runs the conformance suite of package store against the
// databases that newDSN makes: every engine must pass it, as every River
// driver passes riverdrivertest.Exercise. newDSN must return the DSN of a
// fresh, empty, migrated database for each call, which lives until tb ends;
// SQLiteDSN is such a function for SQLite, PostgresDSN for PostgreSQL. The
// suite opens it as MustOpen does (TestOnly on, closed when the test ends),
// and some tests close it and open it again.
//
// Subtests are named by behaviour, e.g.
// Exercise/RecordResolution/LinksFanRegisteredEarlier, and run in
// parallel. They read results through the store's API (Counts, Find*,
// Status) and River's, never through SQL, so that they hold for any engine.
func Exercise(t *testing.T, newDSN func(tb testing.TB) string) {
	t.Helper()
	x := exerciser(func(tb testing.TB, cfg store.Config) *store.DB {
		tb.Helper()
		return mustOpen(tb, cfg, newDSN)
	})
	for _, group := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"SaveEvent", x.saveEvent},
		{"GroupCommit", x.groupCommit},
		{"JobPolicy", x.jobPolicy},
		{"FindEventByID", x.findEventByID},
		{"UpdateEventState", x.updateEventState},
		{"PruneEvents", x.pruneEvents},
		{"Status", x.status},
		{"Quota", x.quota},
		{"SharedQuota", x.sharedQuota},
		{"Close", x.close},
		{"Reopen", func(t *testing.T) { x.reopen(t, newDSN) }},
		{"Start", x.start},
		{"Lease", x.lease},
		{"RecordResolution", x.recordResolution},
		{"RecordFanPendingID", x.recordFanPendingID},
		{"EndLinks", x.endLinks},
		{"Follows", x.follows},
		{"LinkExisting", x.linkExisting},
		{"Reconcile", x.reconcile},
		{"Retry", x.retry},
		{"RegisterFans", x.registerFans},
		{"FailFan", x.failFan},
		{"FindFan", x.findFan},
		{"FindLinks", x.findLinks},
		{"FindCustomer", x.findCustomer},
		{"FansToRenew", x.fansToRenew},
		{"RenewalObservations", func(t *testing.T) { x.renewalObservations(t, newDSN) }},
		{"RegistrationQueue", x.registrationQueue},
		{"Outbox", x.outbox},
		{"PipelineStatus", x.pipelineStatus},
		{"Tallies", x.tallies},
		{"Gauges", x.gauges},
		{"Story", x.story},
		{"Activity", x.activity},
		{"OutboxHealth", x.outboxHealth},
	} {
		t.Run(group.name, func(t *testing.T) {
			t.Parallel()
			group.run(t)
		})
	}
}

// exerciser opens Exercise's stores: a fresh database unless cfg.DSN is
// set, with TestOnly on, closed when tb ends. The groups of the suite are
// its methods.
type exerciser func(tb testing.TB, cfg store.Config) *store.DB

// bundle is one test's store and its clock.
type bundle struct {
	db    *store.DB
	clock *fakeclock.Clock
	// start is where the clock started.
	start time.Time
}

// setup opens a store whose clock starts at a fixed time, with policy as
// Config.Jobs (nil for none).
func (open exerciser) setup(t *testing.T, policy store.JobPolicy) *bundle {
	t.Helper()
	return open.setupConfig(t, store.Config{Jobs: policy})
}

// test runs f as a parallel subtest, on a store opened by setup.
func (open exerciser) test(t *testing.T, name string, policy store.JobPolicy, f func(t *testing.T, b *bundle)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		f(t, open.setup(t, policy))
	})
}

// setupConfig opens a store with cfg, whose Now it sets to a fake clock.
func (open exerciser) setupConfig(t *testing.T, cfg store.Config) *bundle {
	t.Helper()
	start := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	clock := fakeclock.New(start)
	cfg.Now = clock.Now
	return &bundle{db: open(t, cfg), clock: clock, start: start}
}

func (b *bundle) counts(t *testing.T) store.Counts {
	t.Helper()
	return MustCounts(t, b.db)
}

// saveEvent stores a new event of the given kind.
func (b *bundle) saveEvent(t *testing.T, kind string) *store.Event {
	t.Helper()
	ev := NewEvent(kind)
	inserted, err := b.db.SaveEvent(t.Context(), ev)
	require.NoError(t, err)
	require.True(t, inserted)
	return ev
}

func (b *bundle) event(t *testing.T, id int64) *store.Event {
	t.Helper()
	return MustEvent(t, b.db, id)
}

// addFan is AddFan on b's store.
func (b *bundle) addFan(t *testing.T, unionID, pendingID string) []store.Link {
	t.Helper()
	return AddFan(t, b.db, unionID, pendingID)
}

// resolve records a resolution and returns the links it made.
func (b *bundle) resolve(t *testing.T, r store.Resolution) []store.Link {
	t.Helper()
	return Resolve(t, b.db, r)
}

// link registers fan test-u1 with pending_id p-1 and resolves customer
// wwtestcorp/wmtest1 to it, and returns their link.
func (b *bundle) link(t *testing.T) store.Link {
	t.Helper()
	b.addFan(t, "test-u1", "p-1")
	links := b.resolve(t, resolution("wwtestcorp", "wmtest1", "p-1"))
	require.Len(t, links, 1)
	return links[0]
}

func (b *bundle) customer(t *testing.T, corpID, externalUserID string) *store.CustomerDetail {
	t.Helper()
	c, err := b.db.FindCustomer(t.Context(), corpID, externalUserID)
	require.NoError(t, err)
	return c
}

func (b *bundle) fan(t *testing.T, unionID string) *store.FanDetail {
	t.Helper()
	f, err := b.db.FindFan(t.Context(), unionID)
	require.NoError(t, err)
	return f
}

// nextOutbox returns the link's next notification, which must exist.
func (b *bundle) nextOutbox(t *testing.T, linkID int64) *store.OutboxItem {
	t.Helper()
	o, err := b.db.NextOutbox(t.Context(), linkID)
	require.NoError(t, err)
	return o
}

// requireDelivers checks that the store holds exactly the given
// notifications, all of the link, and hands them out in that order. It marks
// them delivered, so a test calls it last.
func (b *bundle) requireDelivers(t *testing.T, linkID int64, kinds ...string) {
	t.Helper()
	require.Equal(t, int64(len(kinds)), b.counts(t).Outbox)
	var got []string
	for {
		o, err := b.db.NextOutbox(t.Context(), linkID)
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		require.NoError(t, err)
		got = append(got, o.Kind)
		require.NoError(t, b.db.MarkOutbox(t.Context(), o, ""))
	}
	require.Equal(t, kinds, got)
}

// end ends the links of wwtestcorp/wmtest1 and returns them.
func (b *bundle) end(t *testing.T) []store.Link {
	t.Helper()
	ended, err := b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"})
	require.NoError(t, err)
	return ended
}

// nextFans returns the unionids of the registration queue's head.
func (b *bundle) nextFans(t *testing.T, limit int) []string {
	t.Helper()
	return QueuedUnionIDs(t, b.db, limit)
}

// jobsWhat returns the jobs of Policy that say what.
func (b *bundle) jobsWhat(t *testing.T, what string) []Job {
	t.Helper()
	var out []Job
	for _, j := range Jobs(t, b.db) {
		if j.What == what {
			out = append(out, j)
		}
	}
	return out
}
