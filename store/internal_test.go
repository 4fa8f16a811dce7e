package store

import (
	"database/sql"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"testing/fstest"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"
)

// These tests reach inside the package: they build batches by hand, which
// the public API cannot do deterministically.

func openInternal(t *testing.T, cfg Config) *DB {
	t.Helper()
	if cfg.DSN == "" {
		cfg.DSN = filepath.Join(t.TempDir(), "p.db")
	}
	cfg.TestOnly = true
	db, err := Open(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	return db
}

// eventJobPolicy gives every event one job, so that events are stored
// EventPending; it inserts nothing else.
type eventJobPolicy struct{}

type eventJob struct {
	EventID int64 `json:"event_id"`
}

func (eventJob) Kind() string { return "internal_test" }

func (eventJobPolicy) EventJobs(_ *Event, id int64) []river.InsertManyParams {
	return []river.InsertManyParams{{Args: eventJob{EventID: id}}}
}
func (eventJobPolicy) NotificationJobs(Link) []river.InsertManyParams  { return nil }
func (eventJobPolicy) PendingIDJobs(FanInput) []river.InsertManyParams { return nil }
func newReq(key string) *saveReq {
	return &saveReq{
		ev: &Event{
			DedupKey: key, CorpID: "wwtest", Kind: KindAddExternalContact,
			ExternalUserID: "wmtest-" + key, Raw: []byte("<xml/>"),
		},
		done: make(chan saveAnswer, 1),
	}
}

func TestCommitBatch(t *testing.T) {
	t.Parallel()

	t.Run("ConcurrentDuplicatesInOneBatch", func(t *testing.T) {
		t.Parallel()
		db := openInternal(t, Config{Jobs: eventJobPolicy{}})
		// A key already stored by an earlier batch, repeated in this one.
		_, err := db.SaveEvent(t.Context(), newReq("old").ev)
		require.NoError(t, err)

		batch := []*saveReq{newReq("a"), newReq("a"), newReq("b"), newReq("a"), newReq("old"), newReq("old")}
		db.commitBatch(t.Context(), batch)

		var answers []saveAnswer
		for _, req := range batch {
			answers = append(answers, <-req.done)
		}
		require.Equal(t, []saveAnswer{{inserted: true}, {}, {inserted: true}, {}, {}, {}}, answers)
		a := batch[0].ev
		for _, i := range []int{1, 3} {
			require.Equal(t, a.ID, batch[i].ev.ID, "copies report the stored event")
			require.Equal(t, EventPending, batch[i].ev.State)
		}
		require.Equal(t, batch[4].ev.ID, batch[5].ev.ID)
		require.NotZero(t, batch[4].ev.ID)

		require.Equal(t, int64(3), QueryInt(t, db, `SELECT count(*) FROM events`))
		require.Equal(t, int64(2), QueryInt(t, db, `SELECT duplicates FROM events WHERE dedup_key = 'a'`))
		require.Equal(t, int64(2), QueryInt(t, db, `SELECT duplicates FROM events WHERE dedup_key = 'old'`))
		require.Equal(t, int64(3), QueryInt(t, db, `SELECT count(*) FROM river_job`), "one job per stored event")
		st, err := db.Status(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(3), st.EventsReceived)
		require.Equal(t, int64(4), st.EventsDuplicate)
	})

	t.Run("SkipsCancelledRequests", func(t *testing.T) {
		t.Parallel()
		db := openInternal(t, Config{})
		kept, cancelled := newReq("kept"), newReq("cancelled")
		cancelled.state.Store(reqCancelled)
		db.commitBatch(t.Context(), []*saveReq{cancelled, kept})
		require.Equal(t, saveAnswer{inserted: true}, <-kept.done)
		require.Empty(t, cancelled.done, "a cancelled caller gets no answer")
		require.Equal(t, int64(1), QueryInt(t, db, `SELECT count(*) FROM events`))
	})

	t.Run("FailureAnswersEveryCaller", func(t *testing.T) {
		t.Parallel()
		dsn := filepath.Join(t.TempDir(), "p.db")
		db := openInternal(t, Config{DSN: dsn, BusyTimeout: 10 * time.Millisecond})

		// Another process holds the write lock for the whole batch, retry
		// included.
		other, err := sql.Open("sqlite", dsn)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, other.Close()) })
		conn, err := other.Conn(t.Context())
		require.NoError(t, err)
		_, err = conn.ExecContext(t.Context(), `BEGIN IMMEDIATE`)
		require.NoError(t, err)

		batch := []*saveReq{newReq("x"), newReq("y"), newReq("z")}
		db.commitBatch(t.Context(), batch)
		for _, req := range batch {
			ans := <-req.done
			require.ErrorIs(t, ans.err, errBusy)
			require.False(t, ans.inserted)
			require.Zero(t, req.ev.ID)
		}

		_, err = conn.ExecContext(t.Context(), `ROLLBACK`)
		require.NoError(t, err)
		require.NoError(t, conn.Close())
		require.Equal(t, int64(0), QueryInt(t, db, `SELECT count(*) FROM events`))
		inserted, err := db.SaveEvent(t.Context(), newReq("x").ev)
		require.NoError(t, err)
		require.True(t, inserted, "the failed batch left nothing behind")
	})
}

func TestDBError_SQLite(t *testing.T) {
	t.Parallel()
	db := openInternal(t, Config{})
	ctx := t.Context()

	require.NoError(t, dbError("op", nil))

	err := db.SQL().QueryRowContext(ctx, `SELECT 1 FROM events WHERE id = 0`).Scan(new(int))
	require.ErrorIs(t, dbError("find", err), ErrNotFound)

	_, err = db.SQL().ExecContext(ctx, `INSERT INTO quota_counters (key, bucket, count) VALUES ('k', 1, 1), ('k', 1, 1)`)
	require.ErrorIs(t, dbError("insert", err), ErrConflict)

	_, err = db.SQL().ExecContext(ctx, `INSERT INTO fan_pending_ids (pending_id, unionid, issued_at, expires_at) VALUES ('p', 'no-such-fan', 0, 0)`)
	require.ErrorIs(t, dbError("insert", err), ErrConflict, "foreign keys are enforced")

	_, err = db.SQL().ExecContext(ctx, `SELECT * FROM no_such_table`)
	got := dbError("select", err)
	require.ErrorContains(t, got, "store: select: ")
	require.False(t, errors.Is(got, ErrConflict) || errors.Is(got, ErrNotFound) || errors.Is(got, errBusy))
}

func TestReadMigrations(t *testing.T) {
	t.Parallel()

	t.Run("OrdersByVersion", func(t *testing.T) {
		t.Parallel()
		migs, err := readMigrations(fstest.MapFS{
			"m/010_ten.sql": {Data: []byte("ten")},
			"m/002_two.sql": {Data: []byte("two")},
		}, "m")
		require.NoError(t, err)
		require.Equal(t, []migration{{2, "two", "two"}, {10, "ten", "ten"}}, migs)
	})

	t.Run("ErrBadName", func(t *testing.T) {
		t.Parallel()
		_, err := readMigrations(fstest.MapFS{"m/1_one.sql": {}}, "m")
		require.ErrorContains(t, err, "NNN_name.sql")
	})

	t.Run("ErrRepeatedVersion", func(t *testing.T) {
		t.Parallel()
		_, err := readMigrations(fstest.MapFS{"m/001_a.sql": {}, "m/001_b.sql": {}}, "m")
		require.ErrorContains(t, err, "share version 1")
	})

	t.Run("EmbeddedAreValid", func(t *testing.T) {
		t.Parallel()
		migs, err := readMigrations(sqliteMigrations, "migrations/sqlite")
		require.NoError(t, err)
		// Gaps are allowed: each version is recorded when applied, so one
		// merged later with a lower number is still applied.
		require.Equal(t, 1, migs[0].version, "versions start at 001")
		for i := 1; i < len(migs); i++ {
			require.Less(t, migs[i-1].version, migs[i].version, "versions increase: "+strconv.Itoa(migs[i].version))
		}
	})
}

func TestSQLiteEngine_CheckpointOnce(t *testing.T) {
	t.Parallel()
	// A long interval keeps the background loop out of the way.
	db := openInternal(t, Config{CheckpointInterval: time.Hour})
	eng := db.eng.(*sqliteEngine)
	walFrames := func() int64 {
		var busy, frames, copied int64
		require.NoError(t, eng.ckpt.QueryRowContext(t.Context(), `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied))
		return frames
	}
	saveOne := func(key string) {
		_, err := db.SaveEvent(t.Context(), newReq(key).ev)
		require.NoError(t, err)
	}

	for i := range 20 {
		saveOne("grow-" + strconv.Itoa(i))
	}
	grown := walFrames()
	require.Positive(t, grown, "commits do not checkpoint by themselves")

	_, err := eng.checkpointOnce(t.Context())
	require.NoError(t, err)
	saveOne("after")
	require.Less(t, walFrames(), grown, "the next commit restarted the WAL from its beginning")
}
