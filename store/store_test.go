package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

var testNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// mustOpen opens a fresh store whose clock is fixed at testNow, with the
// test job policy.
func mustOpen(tb testing.TB) *store.DB {
	tb.Helper()
	return storetest.MustOpen(tb, store.Config{Now: func() time.Time { return testNow }, Jobs: storetest.Policy{}})
}

// count runs a query returning one integer.
func count(t *testing.T, db *store.DB, query string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, db.SQL().QueryRowContext(t.Context(), query, args...).Scan(&n))
	return n
}

// policyJobs returns the args of the jobs storetest.Policy enqueued, oldest
// first, read through River's API.
func policyJobs(t *testing.T, db *store.DB) []storetest.Job {
	t.Helper()
	res, err := db.River().JobList(t.Context(), river.NewJobListParams().Kinds(storetest.Job{}.Kind()).First(10_000))
	require.NoError(t, err)
	var out []storetest.Job
	for _, row := range res.Jobs {
		var j storetest.Job
		require.NoError(t, json.Unmarshal(row.EncodedArgs, &j))
		out = append(out, j)
	}
	return out
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
		require.Equal(t, int64(1), count(t, db2, `SELECT count(*) FROM schema_migrations`))
		require.Equal(t, int64(1), count(t, db2, `SELECT count(*) FROM events`))
	})

	t.Run("SetsPragmas", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		var mode string
		require.NoError(t, db.SQL().QueryRowContext(t.Context(), `PRAGMA journal_mode`).Scan(&mode))
		require.Equal(t, "wal", mode)
		require.Equal(t, int64(2), count(t, db, `PRAGMA synchronous`), "synchronous=FULL")
		require.Equal(t, int64(1), count(t, db, `PRAGMA foreign_keys`))
		require.Equal(t, int64(0), count(t, db, `PRAGMA wal_autocheckpoint`), "checkpoints run beside the writer")
		require.Equal(t, store.DefaultBusyTimeout.Milliseconds(), count(t, db, `PRAGMA busy_timeout`))
	})

	t.Run("PostgresIsNotImplemented", func(t *testing.T) {
		t.Parallel()
		for _, dsn := range []string{"postgres://u:s3cret@localhost/db", "postgresql://u:s3cret@localhost/db"} {
			_, err := store.Open(t.Context(), store.Config{DSN: dsn})
			require.ErrorIs(t, err, errors.ErrUnsupported)
			require.ErrorContains(t, err, "not implemented yet")
			require.NotContains(t, err.Error(), "s3cret")
		}
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

	t.Run("AcceptsFileURI", func(t *testing.T) {
		t.Parallel()
		db := storetest.MustOpen(t, store.Config{DSN: "file:" + filepath.Join(t.TempDir(), "p.db") + "?cache=private"})
		_, err := db.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
		require.NoError(t, err)
	})
}

func TestDB_SaveEvent(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		ev := storetest.NewEvent(store.KindAddExternalContact)

		inserted, err := db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.True(t, inserted)
		require.Positive(t, ev.ID)
		require.Equal(t, store.EventPending, ev.State)
		require.True(t, testNow.Equal(ev.ReceivedAt))

		got, err := db.FindEventByID(t.Context(), ev.ID)
		require.NoError(t, err)
		require.Equal(t, ev, got)

		// Ensure the policy's job was committed with the event, available for work.
		require.Equal(t, []storetest.Job{{What: storetest.JobEvent, EventID: ev.ID, Subject: ev.ExternalUserID}}, policyJobs(t, db))
		require.Equal(t, int64(1), count(t, db, `SELECT count(*) FROM river_job WHERE state = 'available'`))
	})

	t.Run("DuplicateIsNotAnError", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		ev := storetest.NewEvent(store.KindAddExternalContact)
		_, err := db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)

		again := *ev
		again.ID, again.State, again.ReceivedAt = 0, "", time.Time{}
		inserted, err := db.SaveEvent(t.Context(), &again)
		require.NoError(t, err)
		require.False(t, inserted)
		require.Equal(t, ev.ID, again.ID, "a duplicate reports the stored event")
		require.Equal(t, store.EventPending, again.State)

		require.Equal(t, int64(1), count(t, db, `SELECT duplicates FROM events WHERE id = ?`, ev.ID))
		require.Equal(t, int64(1), count(t, db, `SELECT count(*) FROM events`))
		require.Len(t, policyJobs(t, db), 1, "no second job")
	})

	t.Run("EveryPolicyJobCarriesTheEventID", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		ev := storetest.NewEvent(store.KindAddMember)
		ev.Members = []string{"wmtest-a", "wmtest-b", "wmtest-c"}
		inserted, err := db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.True(t, inserted)
		require.Equal(t, store.EventPending, ev.State)

		var want []storetest.Job
		for _, m := range ev.Members {
			want = append(want, storetest.Job{What: storetest.JobEvent, EventID: ev.ID, Subject: m})
		}
		require.Equal(t, want, policyJobs(t, db))
	})

	t.Run("PolicyWithoutJobsIsRecorded", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		ev := storetest.NewEvent(store.KindAddMember)
		ev.Members = nil
		_, err := db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.Equal(t, store.EventRecorded, ev.State)
		require.Equal(t, int64(0), count(t, db, `SELECT count(*) FROM river_job`))
	})

	t.Run("IgnoredHasNoJob", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		ev := storetest.NewEvent(store.KindIgnored)
		ev.Reason = "unknown change type"
		inserted, err := db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.True(t, inserted)
		require.Equal(t, store.EventIgnored, ev.State)
		require.Equal(t, int64(0), count(t, db, `SELECT count(*) FROM river_job`))

		got, err := db.FindEventByID(t.Context(), ev.ID)
		require.NoError(t, err)
		require.Equal(t, "unknown change type", got.Reason)
		require.Equal(t, ev.Raw, got.Raw)
	})

	t.Run("NoPolicyRecordsEveryEvent", func(t *testing.T) {
		t.Parallel()
		db := storetest.MustOpen(t, store.Config{})
		for _, kind := range []string{store.KindAddExternalContact, store.KindAddMember, store.KindDelExternalContact} {
			ev := storetest.NewEvent(kind)
			_, err := db.SaveEvent(t.Context(), ev)
			require.NoError(t, err)
			require.Equal(t, store.EventRecorded, ev.State, kind)
		}
		ev := storetest.NewEvent(store.KindIgnored)
		_, err := db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.Equal(t, store.EventIgnored, ev.State)
		require.Equal(t, int64(0), count(t, db, `SELECT count(*) FROM river_job`))
	})

	t.Run("ErrInvalid", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		long := string(make([]byte, store.MaxFieldLen+1))
		for name, mutate := range map[string]func(*store.Event){
			"DedupKeyRequired": func(e *store.Event) { e.DedupKey = "" },
			"DedupKeyTooLong":  func(e *store.Event) { e.DedupKey = string(make([]byte, store.MaxDedupKeyLen+1)) },
			"KindRequired":     func(e *store.Event) { e.Kind = "" },
			"KindUnknown":      func(e *store.Event) { e.Kind = "add_friend" },
			"RawRequired":      func(e *store.Event) { e.Raw = nil },
			"RawTooLong":       func(e *store.Event) { e.Raw = make([]byte, store.MaxRawLen+1) },
			"CorpIDTooLong":    func(e *store.Event) { e.CorpID = long },
			"ReasonTooLong":    func(e *store.Event) { e.Reason = long },
			"EmptyMember":      func(e *store.Event) { e.Members = []string{""} },
			"TooManyMembers":   func(e *store.Event) { e.Members = make([]string, store.MaxMembers+1) },
		} {
			ev := storetest.NewEvent(store.KindAddExternalContact)
			mutate(ev)
			inserted, err := db.SaveEvent(t.Context(), ev)
			require.ErrorIs(t, err, store.ErrInvalid, name)
			require.False(t, inserted, name)
		}
		_, err := db.SaveEvent(t.Context(), nil)
		require.ErrorIs(t, err, store.ErrInvalid)
		require.Equal(t, int64(0), count(t, db, `SELECT count(*) FROM events`))
	})

	t.Run("CancelledContextWritesNothing", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		inserted, err := db.SaveEvent(ctx, storetest.NewEvent(store.KindAddExternalContact))
		require.ErrorIs(t, err, context.Canceled)
		require.False(t, inserted)
		require.Equal(t, int64(0), count(t, db, `SELECT count(*) FROM events`))
	})

	t.Run("CancelBeforePickupWritesNothing", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
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
		require.Equal(t, int64(0), count(t, db, `SELECT count(*) FROM events WHERE dedup_key = ?`, ev.DedupKey))
		require.Equal(t, int64(1), count(t, db, `SELECT count(*) FROM river_job`))
	})

	t.Run("CancelAfterPickupGetsResult", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
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
		require.Equal(t, int64(1), count(t, db, `SELECT count(*) FROM events WHERE id = ?`, ev.ID))
	})

	t.Run("ErrClosedAfterClose", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		require.NoError(t, db.Close())
		_, err := db.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
		require.ErrorIs(t, err, store.ErrClosed)
	})

	t.Run("ConcurrentExactCounts", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		const goroutines, keys = 200, 100
		var inserted atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, goroutines)
		for i := range goroutines {
			wg.Go(func() {
				ev := storetest.NewEvent(store.KindAddExternalContact)
				ev.DedupKey = fmt.Sprintf("concurrent-%d", i%keys)
				ev.ExternalUserID = fmt.Sprintf("wmtest-%d", i%keys)
				ok, err := db.SaveEvent(t.Context(), ev)
				if ok {
					inserted.Add(1)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Equal(t, int64(keys), inserted.Load())
		require.Equal(t, int64(keys), count(t, db, `SELECT count(*) FROM events`))
		require.Equal(t, int64(goroutines-keys), count(t, db, `SELECT sum(duplicates) FROM events`))
		require.Equal(t, int64(keys), count(t, db, `SELECT count(*) FROM river_job`))
		subjects := map[string]bool{}
		for _, j := range policyJobs(t, db) {
			subjects[j.Subject] = true
		}
		require.Len(t, subjects, keys)

		st, err := db.Status(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(keys), st.EventsReceived)
		require.Equal(t, int64(goroutines-keys), st.EventsDuplicate)
	})
}

func TestDB_FindEventByID(t *testing.T) {
	t.Parallel()

	t.Run("RoundTripsEveryField", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		ev := storetest.NewEvent(store.KindAddMember)
		ev.Reason = "why"
		_, err := db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		got, err := db.FindEventByID(t.Context(), ev.ID)
		require.NoError(t, err)
		require.Equal(t, ev, got)
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		_, err := db.FindEventByID(t.Context(), 42)
		require.ErrorIs(t, err, store.ErrNotFound)
		require.ErrorContains(t, err, "event 42")
	})
}

func TestDB_UpdateEventState(t *testing.T) {
	t.Parallel()
	db := mustOpen(t)
	ev := storetest.NewEvent(store.KindAddExternalContact)
	_, err := db.SaveEvent(t.Context(), ev)
	require.NoError(t, err)

	require.NoError(t, db.UpdateEventState(t.Context(), ev.ID, store.EventFailed, "wecom 40003"))
	got, err := db.FindEventByID(t.Context(), ev.ID)
	require.NoError(t, err)
	require.Equal(t, store.EventFailed, got.State)
	require.Equal(t, "wecom 40003", got.Reason)

	require.ErrorIs(t, db.UpdateEventState(t.Context(), ev.ID+1, store.EventResolved, ""), store.ErrNotFound)
	require.ErrorIs(t, db.UpdateEventState(t.Context(), ev.ID, "done", ""), store.ErrInvalid)
}

func TestDB_PruneEvents(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	now.Store(testNow.UnixNano())
	db := storetest.MustOpen(t, store.Config{Now: func() time.Time { return time.Unix(0, now.Load()) }, Jobs: storetest.Policy{}})

	oldIgnored := storetest.NewEvent(store.KindIgnored)
	oldPending := storetest.NewEvent(store.KindAddExternalContact)
	for _, ev := range []*store.Event{oldIgnored, oldPending} {
		_, err := db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
	}
	now.Store(testNow.Add(40 * 24 * time.Hour).UnixNano())
	recent := storetest.NewEvent(store.KindIgnored)
	_, err := db.SaveEvent(t.Context(), recent)
	require.NoError(t, err)

	n, err := db.PruneEvents(t.Context(), testNow.Add(31*24*time.Hour))
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	_, err = db.FindEventByID(t.Context(), oldIgnored.ID)
	require.ErrorIs(t, err, store.ErrNotFound)
	for _, ev := range []*store.Event{oldPending, recent} {
		_, err := db.FindEventByID(t.Context(), ev.ID)
		require.NoError(t, err, "pending and recent events are kept")
	}

	st, err := db.Status(t.Context())
	require.NoError(t, err)
	require.Equal(t, int64(3), st.EventsReceived, "pruning does not lower counters")
}

func TestDB_Status(t *testing.T) {
	t.Parallel()

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		st, err := db.Status(t.Context())
		require.NoError(t, err)
		require.Equal(t, store.Status{EventsByType: map[string]int64{}}, st)
	})

	t.Run("CountsByKindDuplicatesAndQueue", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		add := storetest.NewEvent(store.KindAddExternalContact)
		for _, ev := range []*store.Event{
			add,
			storetest.NewEvent(store.KindAddExternalContact),
			storetest.NewEvent(store.KindAddMember), // two members: two jobs
			storetest.NewEvent(store.KindIgnored),
			storetest.NewEvent(store.KindEditExternalContact), // one job
		} {
			_, err := db.SaveEvent(t.Context(), ev)
			require.NoError(t, err)
		}
		for range 2 {
			dup := *add
			_, err := db.SaveEvent(t.Context(), &dup)
			require.NoError(t, err)
		}

		st, err := db.Status(t.Context())
		require.NoError(t, err)
		require.Equal(t, store.Status{
			EventsReceived:  5,
			EventsDuplicate: 2,
			EventsIgnored:   1,
			EventsByType: map[string]int64{
				store.KindAddExternalContact:  2,
				store.KindAddMember:           1,
				store.KindIgnored:             1,
				store.KindEditExternalContact: 1,
			},
			QueuePending: 5,
		}, st)
	})
}

func TestDB_Close(t *testing.T) {
	t.Parallel()

	t.Run("DataSurvivesReopen", func(t *testing.T) {
		t.Parallel()
		dsn := filepath.Join(t.TempDir(), "p.db")
		db, err := store.Open(t.Context(), store.Config{DSN: dsn, Jobs: storetest.Policy{}})
		require.NoError(t, err)
		ev := storetest.NewEvent(store.KindAddExternalContact)
		_, err = db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.NoError(t, db.AddQuota(t.Context(), "api", 60, 3))
		require.NoError(t, db.Close())

		db = storetest.MustOpen(t, store.Config{DSN: dsn})
		got, err := db.FindEventByID(t.Context(), ev.ID)
		require.NoError(t, err)
		require.Equal(t, ev.DedupKey, got.DedupKey)
		q, err := db.LoadQuota(t.Context(), "api", 0)
		require.NoError(t, err)
		require.Equal(t, map[int64]int64{60: 3}, q)
		st, err := db.Status(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(1), st.EventsReceived)
		require.Equal(t, int64(1), st.QueuePending)

		// A retry after the restart is still a duplicate.
		inserted, err := db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.False(t, inserted)
	})

	t.Run("IsIdempotent", func(t *testing.T) {
		t.Parallel()
		db, err := store.Open(t.Context(), store.Config{DSN: filepath.Join(t.TempDir(), "p.db")})
		require.NoError(t, err)
		require.NoError(t, db.Close())
		require.NoError(t, db.Close())
		require.ErrorIs(t, db.Start(t.Context()), nil)
	})
}

func TestDB_Ping(t *testing.T) {
	t.Parallel()
	db := mustOpen(t)
	require.NoError(t, db.Ping(t.Context()))
}

func TestDB_Quota(t *testing.T) {
	t.Parallel()

	t.Run("AddAccumulatesPerKeyAndBucket", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		ctx := t.Context()
		require.NoError(t, db.AddQuota(ctx, "k", 60, 1))
		require.NoError(t, db.AddQuota(ctx, "k", 60, 2))
		require.NoError(t, db.AddQuota(ctx, "k", 120, 5))
		require.NoError(t, db.AddQuota(ctx, "other", 60, 7))

		got, err := db.LoadQuota(ctx, "k", 0)
		require.NoError(t, err)
		require.Equal(t, map[int64]int64{60: 3, 120: 5}, got)

		got, err = db.LoadQuota(ctx, "k", 120)
		require.NoError(t, err)
		require.Equal(t, map[int64]int64{120: 5}, got, "since is inclusive")

		got, err = db.LoadQuota(ctx, "none", 0)
		require.NoError(t, err)
		require.Empty(t, got)
		require.NotNil(t, got)
	})

	t.Run("PruneDropsOldBucketsOfEveryKey", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		ctx := t.Context()
		require.NoError(t, db.AddQuota(ctx, "k", 60, 1))
		require.NoError(t, db.AddQuota(ctx, "k", 120, 1))
		require.NoError(t, db.AddQuota(ctx, "other", 60, 1))

		n, err := db.PruneQuota(ctx, 120)
		require.NoError(t, err)
		require.Equal(t, int64(2), n)
		got, err := db.LoadQuota(ctx, "k", 0)
		require.NoError(t, err)
		require.Equal(t, map[int64]int64{120: 1}, got)
	})

	t.Run("ErrInvalidKey", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		require.ErrorIs(t, db.AddQuota(t.Context(), "", 60, 1), store.ErrInvalid)
	})
}

func TestDB_Start(t *testing.T) {
	t.Parallel()

	t.Run("InsertOnlyClientInsertsInTx", func(t *testing.T) {
		t.Parallel()
		db := mustOpen(t)
		require.NoError(t, db.Start(t.Context()), "no-op without workers")

		tx, err := db.SQL().BeginTx(t.Context(), nil)
		require.NoError(t, err)
		_, err = db.River().InsertTx(t.Context(), tx, storetest.Job{What: "test", Subject: "wmtest"}, nil)
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		require.Equal(t, []storetest.Job{{What: "test", Subject: "wmtest"}}, policyJobs(t, db))
	})

	t.Run("WorkersWorkSavedEvents", func(t *testing.T) {
		t.Parallel()
		workers := river.NewWorkers()
		worked := make(chan storetest.Job, 1)
		river.AddWorker(workers, river.WorkFunc(func(_ context.Context, job *river.Job[storetest.Job]) error {
			worked <- job.Args
			return nil
		}))
		db := storetest.MustOpen(t, store.Config{Workers: workers, Jobs: storetest.Policy{}})
		completed, cancel := db.River().Subscribe(river.EventKindJobCompleted)
		defer cancel()
		require.NoError(t, db.Start(t.Context()))

		ev := storetest.NewEvent(store.KindAddExternalContact)
		_, err := db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)

		select {
		case args := <-worked:
			require.Equal(t, ev.ID, args.EventID)
		case <-time.After(30 * time.Second):
			t.Fatal("the event's job was not worked")
		}
		select {
		case e := <-completed:
			require.Equal(t, storetest.Job{}.Kind(), e.Job.Kind)
		case <-time.After(30 * time.Second):
			t.Fatal("the event's job did not complete")
		}
	})
}
