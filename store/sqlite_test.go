package store_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

// TestExercise runs the conformance suite on SQLite. What follows it is
// what only SQLite has (pragmas, files, triggers) or what needs the
// package's test hooks.
func TestExercise(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, storetest.SQLiteDSN)
}

func TestOpen(t *testing.T) {
	t.Parallel()

	t.Run("MigrationsAreIdempotent", func(t *testing.T) {
		t.Parallel()
		dsn := filepath.Join(t.TempDir(), "p.db")
		db1, err := store.Open(t.Context(), store.Config{DSN: dsn})
		require.NoError(t, err)
		_, err = db1.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
		require.NoError(t, err)
		require.NoError(t, db1.Close())

		db2 := storetest.MustOpen(t, store.Config{DSN: dsn})
		entries, err := fs.ReadDir(os.DirFS("migrations/sqlite"), ".")
		require.NoError(t, err)
		require.Equal(t, int64(len(entries)), store.QueryInt(t, db2, `SELECT count(*) FROM schema_migrations`), "each migration is recorded once")
		require.Equal(t, store.Counts{Events: 1}, storetest.MustCounts(t, db2))
	})

	t.Run("SetsPragmas", func(t *testing.T) {
		t.Parallel()
		db := storetest.MustOpen(t, store.Config{})
		var mode string
		require.NoError(t, db.SQL().QueryRowContext(t.Context(), `PRAGMA journal_mode`).Scan(&mode))
		require.Equal(t, "wal", mode)
		require.Equal(t, int64(2), store.QueryInt(t, db, `PRAGMA synchronous`), "synchronous=FULL")
		require.Equal(t, int64(1), store.QueryInt(t, db, `PRAGMA foreign_keys`))
		require.Equal(t, int64(0), store.QueryInt(t, db, `PRAGMA wal_autocheckpoint`), "checkpoints run beside the writer")
		require.Equal(t, store.DefaultBusyTimeout.Milliseconds(), store.QueryInt(t, db, `PRAGMA busy_timeout`))
	})

	t.Run("PostgresErrorsHideThePassword", func(t *testing.T) {
		t.Parallel()
		// Nothing listens on port 1: Open picks PostgreSQL for both schemes
		// and fails to connect, without echoing the password.
		for _, dsn := range []string{"postgres://u:s3cret@127.0.0.1:1/db", "postgresql://u:s3cret@127.0.0.1:1/db?connect_timeout=5"} {
			_, err := store.Open(t.Context(), store.Config{DSN: dsn})
			require.ErrorContains(t, err, "store: connect to PostgreSQL")
			require.NotContains(t, err.Error(), "s3cret")
		}
		_, err := store.Open(t.Context(), store.Config{DSN: "postgres://u:s3cret@127.0.0.1:1/db?sslmode=bogus"})
		require.ErrorIs(t, err, store.ErrInvalid, "a DSN pgx cannot parse")
		require.NotContains(t, err.Error(), "s3cret")
	})

	t.Run("ErrBadPath", func(t *testing.T) {
		t.Parallel()
		dsn := filepath.Join(t.TempDir(), "missing", "dir", "p.db")
		_, err := store.Open(t.Context(), store.Config{DSN: dsn})
		require.ErrorContains(t, err, "store: open")
	})

	t.Run("ErrInMemory", func(t *testing.T) {
		t.Parallel()
		for _, dsn := range []string{":memory:", "file::memory:?cache=shared", "file:x?mode=memory"} {
			_, err := store.Open(t.Context(), store.Config{DSN: dsn})
			require.ErrorIs(t, err, store.ErrInvalid, dsn)
		}
	})

	t.Run("ErrJobConfigWithoutWorkers", func(t *testing.T) {
		t.Parallel()
		_, err := store.Open(t.Context(), store.Config{
			DSN:    filepath.Join(t.TempDir(), "p.db"),
			Queues: map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 1}},
		})
		require.ErrorContains(t, err, "Config.Queues needs Config.Workers")
		_, err = store.Open(t.Context(), store.Config{
			DSN:          filepath.Join(t.TempDir(), "p.db"),
			PeriodicJobs: []*river.PeriodicJob{},
		})
		require.ErrorContains(t, err, "Config.PeriodicJobs needs Config.Workers")
	})

	t.Run("ErrNegativeConfig", func(t *testing.T) {
		t.Parallel()
		for name, set := range map[string]func(*store.Config){
			"MaxBatch":             func(c *store.Config) { c.MaxBatch = -1 },
			"ReadConns":            func(c *store.Config) { c.ReadConns = -1 },
			"MaxConns":             func(c *store.Config) { c.MaxConns = -1 },
			"BusyTimeout":          func(c *store.Config) { c.BusyTimeout = -1 },
			"CheckpointInterval":   func(c *store.Config) { c.CheckpointInterval = -1 },
			"WALRestartPages":      func(c *store.Config) { c.WALRestartPages = -1 },
			"WriteFailureWindow":   func(c *store.Config) { c.WriteFailureWindow = -1 },
			"RescueStuckJobsAfter": func(c *store.Config) { c.RescueStuckJobsAfter = -1 },
			"SoftStopTimeout":      func(c *store.Config) { c.SoftStopTimeout = -1 },
			"LeaseRetry":           func(c *store.Config) { c.LeaseRetry = -1 },
		} {
			cfg := store.Config{DSN: filepath.Join(t.TempDir(), "p.db")}
			set(&cfg)
			_, err := store.Open(t.Context(), cfg)
			require.EqualError(t, err, "store: Config."+name+" must not be negative")
		}
	})

	t.Run("AcceptsFileURI", func(t *testing.T) {
		t.Parallel()
		db := storetest.MustOpen(t, store.Config{DSN: "file:" + filepath.Join(t.TempDir(), "p.db") + "?cache=private"})
		_, err := db.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
		require.NoError(t, err)
	})
}

// TestGroupCommit stops the writer at known points through the package's
// test hooks, which other engines' tests cannot reach.
func TestGroupCommit(t *testing.T) {
	t.Parallel()

	t.Run("CancelBeforePickupWritesNothing", func(t *testing.T) {
		t.Parallel()
		db := storetest.MustOpen(t, store.Config{Jobs: storetest.Policy{}})
		reached, release := make(chan struct{}), make(chan struct{})
		var first atomic.Bool
		first.Store(true)
		store.SetTestHooks(db, func(int) {
			if first.CompareAndSwap(true, false) {
				close(reached)
				<-release
			}
		}, nil)

		ctx, cancel := context.WithCancel(t.Context())
		ev := storetest.NewEvent(store.KindAddExternalContact)
		errc := make(chan error, 1)
		go func() {
			_, err := db.SaveEvent(ctx, ev)
			errc <- err
		}()
		<-reached // the writer holds the event but has not taken it
		cancel()
		require.ErrorIs(t, <-errc, context.Canceled)
		close(release)

		// The next event goes through, after the writer skipped the first.
		inserted, err := db.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
		require.NoError(t, err)
		require.True(t, inserted)
		require.Equal(t, store.Counts{Events: 1, Jobs: 1}, storetest.MustCounts(t, db))
		inserted, err = db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.True(t, inserted, "the cancelled event was never stored")
	})

	t.Run("CancelAfterPickupGetsResult", func(t *testing.T) {
		t.Parallel()
		db := storetest.MustOpen(t, store.Config{Jobs: storetest.Policy{}})
		reached, release := make(chan struct{}), make(chan struct{})
		store.SetTestHooks(db, nil, func(int) {
			close(reached)
			<-release
		})

		ctx, cancel := context.WithCancel(t.Context())
		ev := storetest.NewEvent(store.KindAddExternalContact)
		type result struct {
			inserted bool
			err      error
		}
		resc := make(chan result, 1)
		go func() {
			inserted, err := db.SaveEvent(ctx, ev)
			resc <- result{inserted, err}
		}()
		<-reached // taken: the transaction will run
		cancel()
		close(release)
		res := <-resc
		require.NoError(t, res.err)
		require.True(t, res.inserted)
		got, err := db.FindEventByID(t.Context(), ev.ID)
		require.NoError(t, err)
		require.Equal(t, ev.DedupKey, got.DedupKey)
		require.Equal(t, store.Counts{Events: 1, Jobs: 1}, storetest.MustCounts(t, db))
	})
}

func TestDB_RecordResolution_FailureIsIsolated(t *testing.T) {
	t.Parallel()
	// Ensure one resolution that fails does not fail the others committed in
	// the same group: a trigger makes the insert of one customer abort.
	db := storetest.MustOpen(t, store.Config{Jobs: storetest.Policy{}})
	_, err := db.SQL().ExecContext(t.Context(), `CREATE TRIGGER boom BEFORE INSERT ON resolutions
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
			_, errs[i] = db.RecordResolution(t.Context(), store.Resolution{CorpID: "wwtestcorp", ExternalUserID: ext, PendingID: "p-" + ext})
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
	require.Equal(t, int64(10), storetest.MustCounts(t, db).Resolutions)
}

// A write around the triggers (here, SQL run by hand) is what CheckTallies
// exists to find.
func TestCheckTallies_FindsWritesAroundTheTriggers(t *testing.T) {
	t.Parallel()
	db := storetest.MustOpen(t, store.Config{})
	_, err := db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-u1", OpenID: "o"}}, store.RegisterOpts{NoJob: true})
	require.NoError(t, err)
	_, err = db.RecordFanPendingID(t.Context(), "test-u1", "p-1")
	require.NoError(t, err)
	drift, err := db.CheckTallies(t.Context())
	require.NoError(t, err)
	require.Empty(t, drift)

	_, err = db.SQL().ExecContext(t.Context(), `UPDATE tallies SET n = n + 2 WHERE name = 'fans.registered'`)
	require.NoError(t, err)
	_, err = db.SQL().ExecContext(t.Context(), `UPDATE fans SET live_until = NULL`)
	require.NoError(t, err)
	drift, err = db.CheckTallies(t.Context())
	require.NoError(t, err)
	var got []string
	for _, d := range drift {
		got = append(got, d.String())
	}
	require.Equal(t, []string{"fans.registered[0]: tally 3, recount 1", "live_until.wrong[0]: tally 0, recount 1"}, got,
		"live_until's own tally moved with the UPDATE; the fan's column no longer matches its ids")
}
