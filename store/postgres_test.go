package store_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

// TestMain drops the PostgreSQL template database once every test is over.
func TestMain(m *testing.M) { storetest.Main(m) }

// TestExercisePostgres runs the conformance suite on PostgreSQL. What
// follows it is what only PostgreSQL has: several instances on one
// database, the migration and write locks, the listener.
func TestExercisePostgres(t *testing.T) {
	t.Parallel()
	storetest.SkipWithoutPostgres(t)
	storetest.Exercise(t, storetest.PostgresDSN)
}

func TestOpenPostgres(t *testing.T) {
	t.Parallel()
	storetest.SkipWithoutPostgres(t)

	t.Run("ConcurrentOpensOfAFreshDatabaseMigrateOnce", func(t *testing.T) {
		t.Parallel()
		dsn := storetest.EmptyPostgresDSN(t)
		// Instances starting together: the migration lock makes the later
		// ones find everything applied instead of failing on tables that
		// exist.
		const instances = 3
		dbs := make([]*store.DB, instances)
		errs := make([]error, instances)
		var wg sync.WaitGroup
		for i := range instances {
			wg.Go(func() { dbs[i], errs[i] = store.Open(t.Context(), store.Config{DSN: dsn, TestOnly: true}) })
		}
		wg.Wait()
		for i := range instances {
			require.NoError(t, errs[i], "instance %d", i)
			t.Cleanup(func() { require.NoError(t, dbs[i].Close()) })
		}
		entries, err := fs.ReadDir(os.DirFS("migrations/postgres"), ".")
		require.NoError(t, err)
		require.Equal(t, int64(len(entries)), store.QueryInt(t, dbs[0], `SELECT count(*) FROM schema_migrations`), "each migration is recorded once")
		require.Positive(t, store.QueryInt(t, dbs[0], `SELECT count(*) FROM river_migration`))
		_, err = dbs[1].SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
		require.NoError(t, err)
		require.Equal(t, int64(1), storetest.MustCounts(t, dbs[2]).Events, "one database behind every instance")
	})

	t.Run("ErrBadDatabase", func(t *testing.T) {
		t.Parallel()
		dsn := strings.Replace(storetest.PostgresDSN(t), "/pendinglink_test_", "/pendinglink_missing_", 1)
		_, err := store.Open(t.Context(), store.Config{DSN: dsn})
		require.ErrorContains(t, err, "store: connect to PostgreSQL")
	})
}

// TestPostgres_JITOffUnlessTheDSNSaysSo: the pool's sessions run without
// JIT, which compiled short queries for longer than they ran, unless the
// DSN sets jit, as a parameter or in options.
func TestPostgres_JITOffUnlessTheDSNSaysSo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, params, want string }{
		{"Default", "", "off"},
		{"Parameter", "&jit=on", "on"},
		{"Options", "&options=-c%20jit%3Don", "on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := storetest.MustOpenPostgres(t, store.Config{DSN: storetest.PostgresDSN(t) + tc.params})
			var jit string
			require.NoError(t, db.SQL().QueryRowContext(t.Context(), `SHOW jit`).Scan(&jit))
			require.Equal(t, tc.want, jit)
		})
	}
}

// TestDBError_Postgres: PostgreSQL's error codes map to the store's
// errors as SQLite's do (TestDBError_SQLite).
func TestDBError_Postgres(t *testing.T) {
	t.Parallel()
	db := storetest.MustOpenPostgres(t, store.Config{})
	ctx := t.Context()

	err := db.SQL().QueryRowContext(ctx, `SELECT 1 FROM events WHERE id = 0`).Scan(new(int))
	require.ErrorIs(t, store.DBError("find", err), store.ErrNotFound)

	_, err = db.SQL().ExecContext(ctx, `INSERT INTO quota_counters (key, bucket, count) VALUES ('k', 1, 1), ('k', 1, 1)`)
	require.ErrorIs(t, store.DBError("insert", err), store.ErrConflict, "unique")

	_, err = db.SQL().ExecContext(ctx, `INSERT INTO fan_pending_ids (pending_id, unionid, issued_at, expires_at) VALUES ('p', 'no-such-fan', 0, 0)`)
	require.ErrorIs(t, store.DBError("insert", err), store.ErrConflict, "foreign key")

	_, err = db.SQL().ExecContext(ctx, `INSERT INTO links (unionid, openid, pending_id, corp_id, external_userid, active, matched_at, updated_at)
		VALUES ('u', 'o', 'p', 'c', 'e', 2, 0, 0)`)
	require.ErrorIs(t, store.DBError("insert", err), store.ErrConflict, "check")

	_, err = db.SQL().ExecContext(ctx, `SELECT * FROM no_such_table`)
	got := store.DBError("select", err)
	require.ErrorContains(t, got, "store: select: ")
	require.NotErrorIs(t, got, store.ErrConflict)
	require.NotErrorIs(t, got, store.ErrNotFound)
	require.NotErrorIs(t, got, store.ErrBusy)
}

// TestPostgres_WriteLock: the store's write transactions queue for one
// advisory lock, for at most Config.BusyTimeout.
func TestPostgres_WriteLock(t *testing.T) {
	t.Parallel()
	db := storetest.MustOpenPostgres(t, store.Config{BusyTimeout: 20 * time.Millisecond})

	// Another session (an instance stuck in a write) holds the lock.
	conn, err := db.SQL().Conn(t.Context())
	require.NoError(t, err)
	_, err = conn.ExecContext(t.Context(), `SELECT pg_advisory_lock($1)`, store.WriteLockKey)
	require.NoError(t, err)

	_, err = db.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
	require.ErrorIs(t, err, store.ErrBusy, "the batch waited BusyTimeout, twice, then failed")
	require.ErrorIs(t, db.Ping(t.Context()), store.ErrBusy, "a failed commit makes the store unready")
	_, err = db.RecordFanPendingID(t.Context(), "u", "p")
	require.ErrorIs(t, err, store.ErrBusy)

	_, err = conn.ExecContext(t.Context(), `SELECT pg_advisory_unlock($1)`, store.WriteLockKey)
	require.NoError(t, err)
	require.NoError(t, conn.Close())
	inserted, err := db.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
	require.NoError(t, err)
	require.True(t, inserted)
	require.NoError(t, db.Ping(t.Context()))
	require.Equal(t, int64(1), storetest.MustCounts(t, db).Events, "the failed batch left nothing behind")
}

// TestPostgres_TwoInstances: instances sharing a database keep the
// guarantees one instance gives, with each its own group commit and pool.
func TestPostgres_TwoInstances(t *testing.T) {
	t.Parallel()
	storetest.SkipWithoutPostgres(t)
	dsn := storetest.PostgresDSN(t)
	a := storetest.MustOpenPostgres(t, store.Config{DSN: dsn, Jobs: storetest.Policy{}, MaxConns: 4})
	b := storetest.MustOpenPostgres(t, store.Config{DSN: dsn, Jobs: storetest.Policy{}, MaxConns: 4})

	t.Run("RepeatedCallbacksStoredOnce", func(t *testing.T) {
		// WeCom retries a callback; the load balancer sends the copies to
		// either instance.
		const callers, keys = 200, 50
		var wg sync.WaitGroup
		errs := make([]error, callers)
		inserted := make([]bool, callers)
		for i := range callers {
			db := a
			if i%2 == 1 {
				db = b
			}
			wg.Go(func() {
				ev := storetest.NewEvent(store.KindAddExternalContact)
				ev.DedupKey = fmt.Sprintf("two-%d", i%keys)
				ev.ExternalUserID = fmt.Sprintf("wmtwo-%d", i%keys)
				inserted[i], errs[i] = db.SaveEvent(t.Context(), ev)
			})
		}
		wg.Wait()
		var n int
		for i := range callers {
			require.NoError(t, errs[i])
			if inserted[i] {
				n++
			}
		}
		require.Equal(t, keys, n, "each key inserted by exactly one caller")
		c := storetest.MustCounts(t, a)
		require.Equal(t, int64(keys), c.Events)
		require.Equal(t, int64(keys), c.Jobs, "one job per stored event")
		st, err := b.Status(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(keys), st.EventsReceived)
		require.Equal(t, int64(callers-keys), st.EventsDuplicate)
	})

	t.Run("FanAndCustomerMatchedAtTheSameMoment", func(t *testing.T) {
		// One instance records each fan's pending_id while the other
		// records the customer WeCom resolved to it: whichever commits
		// second must see the first and link them. Side by side at READ
		// COMMITTED, both could miss the other; the write lock orders them.
		const pairs = 40
		fans := make([]store.FanInput, pairs)
		for i := range fans {
			fans[i] = store.FanInput{UnionID: fmt.Sprintf("u-same-%d", i), OpenID: fmt.Sprintf("o-same-%d", i)}
		}
		_, err := a.RegisterFans(t.Context(), fans, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)

		var wg sync.WaitGroup
		errs := make([]error, 2*pairs)
		for i := range pairs {
			p := fmt.Sprintf("p-same-%d", i)
			wg.Go(func() { _, errs[2*i] = a.RecordFanPendingID(t.Context(), fans[i].UnionID, p) })
			wg.Go(func() {
				_, errs[2*i+1] = b.RecordResolution(t.Context(), store.Resolution{CorpID: "wwsame", ExternalUserID: fmt.Sprintf("wm-same-%d", i), PendingID: p})
			})
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		links, err := a.FindLinks(t.Context(), store.LinkFilter{CorpID: "wwsame", Limit: 2 * pairs})
		require.NoError(t, err)
		require.Equal(t, pairs, len(links), "every fan linked to its customer")
	})
}

// TestPostgres_ListenerStartsJobs: with River's poll a full hour away, a
// saved event's job still runs, because River hears the insert through
// LISTEN/NOTIFY. River's Start returns once its producer listens.
func TestPostgres_ListenerStartsJobs(t *testing.T) {
	t.Parallel()
	workers, worked := storetest.RecordingWorkers()
	db := storetest.MustOpenPostgres(t, store.Config{Jobs: storetest.Policy{}, Workers: workers, FetchPollInterval: time.Hour})
	require.NoError(t, db.Start(t.Context()))

	ev := storetest.NewEvent(store.KindAddExternalContact)
	_, err := db.SaveEvent(t.Context(), ev)
	require.NoError(t, err)
	require.Equal(t, ev.ID, storetest.Receive(t, worked, "the job was not started by a notification").EventID)
}

// TestPostgres_StartLeavesRunningJobsToTheRescuer: unlike SQLite's, a
// PostgreSQL database is shared, so a job running at Start may be another
// live instance's; Start leaves it to River's rescuer.
func TestPostgres_StartLeavesRunningJobsToTheRescuer(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	other := storetest.MustOpenPostgres(t, store.Config{DSN: dsn, Jobs: storetest.Policy{}})
	_, err := other.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
	require.NoError(t, err)
	// What an instance working the job looks like.
	_, err = other.SQL().ExecContext(t.Context(), `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now()`)
	require.NoError(t, err)

	workers := river.NewWorkers()
	river.AddWorker(workers, river.WorkFunc(func(context.Context, *river.Job[storetest.Job]) error { return nil }))
	db := storetest.MustOpenPostgres(t, store.Config{DSN: dsn, Jobs: storetest.Policy{}, Workers: workers})
	require.NoError(t, db.Start(t.Context()))
	require.Equal(t, int64(1), store.QueryInt(t, db, `SELECT count(*) FROM river_job WHERE state = 'running'`))
}

// TestPostgres_StartResumesItsOwnPreviousProcessJobs: with an InstanceID,
// the jobs this instance's previous process left running (killed) are
// made available at Start; another instance's running jobs are not.
func TestPostgres_StartResumesItsOwnPreviousProcessJobs(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	seed := storetest.MustOpenPostgres(t, store.Config{DSN: dsn, Jobs: storetest.Policy{}})
	for range 2 {
		_, err := seed.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
		require.NoError(t, err)
	}
	// One job was running on instance "pl-a" when it died, one runs on "pl-b".
	_, err := seed.SQL().ExecContext(t.Context(), `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now(),
		attempted_by = ARRAY[CASE WHEN id = (SELECT min(id) FROM river_job) THEN 'pl-a' ELSE 'pl-b' END]`)
	require.NoError(t, err)

	workers := river.NewWorkers()
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	river.AddWorker(workers, river.WorkFunc(func(ctx context.Context, _ *river.Job[storetest.Job]) error {
		select { // hold the resumed job so its state can be read
		case <-block:
		case <-ctx.Done():
		}
		return nil
	}))
	_, err = store.Open(t.Context(), store.Config{DSN: dsn, InstanceID: "bad id!"})
	require.ErrorContains(t, err, "InstanceID")

	db := storetest.MustOpenPostgres(t, store.Config{DSN: dsn, Jobs: storetest.Policy{}, Workers: workers, InstanceID: "pl-a"})
	require.NoError(t, db.Start(t.Context()))
	require.Equal(t, int64(1), store.QueryInt(t, db, `SELECT count(*) FROM river_job WHERE state = 'running' AND 'pl-b' = ANY(attempted_by)`),
		"pl-b's job is still its own")
	require.Equal(t, int64(0), store.QueryInt(t, db, `SELECT count(*) FROM river_job WHERE attempted_by = ARRAY['pl-a']::text[]
		AND state = 'running' AND attempt = 1`), "pl-a's old attempt was taken back")
}

// TestPostgres_SharedToken: instances sharing a database fetch a WeCom
// token once between them; a refused or expired token is fetched again.
func TestPostgres_SharedToken(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	a := storetest.MustOpenPostgres(t, store.Config{DSN: dsn})
	b := storetest.MustOpenPostgres(t, store.Config{DSN: dsn})
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	var fetches atomic.Int32
	fetch := func(context.Context) (store.Token, error) {
		n := fetches.Add(1)
		return store.Token{Value: fmt.Sprintf("tok-%d", n), FetchedAt: now, ExpiresAt: now.Add(time.Hour)}, nil
	}
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		db := []*store.DB{a, b}[i%2]
		wg.Go(func() {
			tok, err := db.SharedToken(t.Context(), "up:ww1:1000002", "", now, fetch)
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = tok.Value
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, fetches.Load(), "one fetch for both instances")
	for _, g := range got {
		require.Equal(t, "tok-1", g)
	}

	tok, err := b.SharedToken(t.Context(), "up:ww1:1000002", "tok-1", now, fetch)
	require.NoError(t, err)
	require.Equal(t, "tok-2", tok.Value, "a refused token is fetched again")
	tok, err = a.SharedToken(t.Context(), "up:ww1:1000002", "", now.Add(2*time.Hour), fetch)
	require.NoError(t, err)
	require.Equal(t, "tok-3", tok.Value, "an expired one too")
	tok, err = a.SharedToken(t.Context(), "down:ww2:7", "", now, fetch)
	require.NoError(t, err)
	require.Equal(t, "tok-4", tok.Value, "keys apart")
}

// TestPostgres_LeasedQueueOneInstanceAtATime: of two instances on one
// database, only the one holding the lease works the leased queue, and
// when it stops the other takes the queue over.
func TestPostgres_LeasedQueueOneInstanceAtATime(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	type work struct {
		instance string
		job      storetest.Job
	}
	worked := make(chan work, 100)
	open := func(instance string) *store.DB {
		workers := river.NewWorkers()
		river.AddWorker(workers, river.WorkFunc(func(_ context.Context, job *river.Job[storetest.Job]) error {
			worked <- work{instance, job.Args}
			return nil
		}))
		db := storetest.MustOpenPostgres(t, store.Config{
			DSN: dsn, Workers: workers, InstanceID: instance, LeaseRetry: 20 * time.Millisecond, FetchCooldown: 10 * time.Millisecond, FetchPollInterval: 20 * time.Millisecond,
			Queues:       map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 2}, "leased": {MaxWorkers: 2}},
			LeasedQueues: []string{"leased"},
		})
		require.NoError(t, db.Start(t.Context()))
		return db
	}
	a := open("a") // takes the lease at Start
	b := open("b")
	insert := func(db *store.DB, n int, subject string) {
		for range n {
			_, err := db.River().Insert(t.Context(), storetest.Job{What: "test", Subject: subject}, &river.InsertOpts{Queue: "leased"})
			require.NoError(t, err)
		}
	}
	// await returns who worked n jobs; the timeout only bounds a failing test.
	await := func(n int) map[string]int {
		by := map[string]int{}
		for range n {
			select {
			case w := <-worked:
				by[w.instance]++
			case <-time.After(30 * time.Second):
				t.Fatalf("only %v of %d jobs worked", by, n)
			}
		}
		return by
	}

	insert(b, 20, "first") // inserted on b, worked on a
	require.Equal(t, map[string]int{"a": 20}, await(20))

	require.NoError(t, a.Close()) // releases the lease once its jobs finished
	insert(b, 20, "second")
	require.Equal(t, map[string]int{"b": 20}, await(20), "b takes over the queue a left")
}

// TestPostgres_LeaseRetriesReuseTheirConnection: an instance that does not
// hold a lease tries again every second; each try must not open a new
// connection to the server.
func TestPostgres_LeaseRetriesReuseTheirConnection(t *testing.T) {
	t.Parallel()
	db := storetest.MustOpenPostgres(t, store.Config{})
	held, err := db.TryLease(t.Context(), "x")
	require.NoError(t, err)
	// The sessions that asked for a lease: the holder's and the trier's.
	leaseSessions := func() []int64 {
		rows, err := db.SQL().QueryContext(t.Context(), `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE '%pg_try_advisory_lock%' AND pid <> pg_backend_pid() ORDER BY pid`)
		require.NoError(t, err)
		defer rows.Close()
		var pids []int64
		for rows.Next() {
			var pid int64
			require.NoError(t, rows.Scan(&pid))
			pids = append(pids, pid)
		}
		require.NoError(t, rows.Err())
		return pids
	}
	_, err = db.TryLease(t.Context(), "x")
	require.ErrorIs(t, err, store.ErrLeaseHeld)
	before := leaseSessions()
	require.Len(t, before, 2)
	for range 5 {
		_, err = db.TryLease(t.Context(), "x")
		require.ErrorIs(t, err, store.ErrLeaseHeld)
	}
	require.Equal(t, before, leaseSessions(), "the failed tries kept one connection")

	require.NoError(t, held.Release())
	l, err := db.TryLease(t.Context(), "x")
	require.NoError(t, err, "taken on the kept connection once free")
	require.NoError(t, l.Release())
}
