package store_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/internal/fakeclock"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

// TestDB_Ping_ReportsRecentWriteFailures: readiness must not say "ok" while
// every commit fails (a full disk answers reads but not writes).
func TestDB_Ping_ReportsRecentWriteFailures(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	db := storetest.MustOpen(t, store.Config{Now: clock.Now, Jobs: storetest.Policy{}})
	require.NoError(t, db.Ping(t.Context()))

	// A trigger stands in for a disk that refuses writes.
	_, err := db.SQL().ExecContext(t.Context(),
		`CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END`)
	require.NoError(t, err)
	_, err = db.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
	require.Error(t, err)
	require.ErrorContains(t, db.Ping(t.Context()), "disk is full", "a failed commit makes the store unready")

	t.Run("RecoversWithTheNextCommit", func(t *testing.T) {
		_, err := db.SQL().ExecContext(t.Context(), `DROP TRIGGER refuse`)
		require.NoError(t, err)
		_, err = db.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
		require.NoError(t, err)
		require.NoError(t, db.Ping(t.Context()))
	})

	t.Run("ForgetsAnOldFailure", func(t *testing.T) {
		// Without traffic no commit clears the failure: after the window
		// the store is ready again, so a load balancer sends callbacks
		// that show whether writes work now.
		_, err := db.SQL().ExecContext(t.Context(),
			`CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END`)
		require.NoError(t, err)
		_, err = db.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
		require.Error(t, err)
		require.Error(t, db.Ping(t.Context()))
		clock.Advance(store.DefaultWriteFailureWindow)
		require.NoError(t, db.Ping(t.Context()))
	})
}

// TestDB_Start_ResumesJobsOfADeadProcess: on SQLite one process owns the
// file, so a job left running belongs to a process that died (kill -9) and
// must run again at start, not after River's one-hour rescue.
func TestDB_Start_ResumesJobsOfADeadProcess(t *testing.T) {
	t.Parallel()
	dsn := filepath.Join(t.TempDir(), "p.db")
	db := storetest.MustOpen(t, store.Config{DSN: dsn, Jobs: storetest.Policy{}})
	ev := storetest.NewEvent(store.KindAddExternalContact)
	_, err := db.SaveEvent(t.Context(), ev)
	require.NoError(t, err)
	// What a process killed while working the job leaves behind.
	_, err = db.SQL().ExecContext(t.Context(), `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = unixepoch()`)
	require.NoError(t, err)
	require.NoError(t, db.Close())

	workers, worked := storetest.RecordingWorkers()
	db = storetest.MustOpen(t, store.Config{DSN: dsn, Jobs: storetest.Policy{}, Workers: workers,
		FetchCooldown: 5 * time.Millisecond, FetchPollInterval: 10 * time.Millisecond})
	require.NoError(t, db.Start(t.Context()))
	require.Equal(t, ev.ID, storetest.Receive(t, worked, "the job left running by the dead process was not resumed").EventID)
}
