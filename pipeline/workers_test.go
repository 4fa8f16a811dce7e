package pipeline_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertest"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/internal/fakeclock"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/pipeline/pipelinetest"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
	"github.com/pendinglink/pendinglink/wecom"
)

// jobDB holds a migrated River database file that each worker test copies.
var jobDB struct {
	once  sync.Once
	bytes []byte
	err   error
}

// jobTx returns a transaction on a fresh River database of the test's own,
// for rivertest to insert and work a job in. The job's row lives there, not
// in the store: the store's single SQLite writer connection must stay free
// for the worker's own writes while the job's transaction is open.
func jobTx(t *testing.T) *sql.Tx {
	t.Helper()
	jobDB.once.Do(func() {
		path := filepath.Join(t.TempDir(), "jobs.db")
		db, err := sql.Open("sqlite", path)
		if err != nil {
			jobDB.err = err
			return
		}
		defer db.Close()
		m, err := rivermigrate.New(riversqlite.New(db), nil)
		if err == nil {
			_, err = m.Migrate(context.Background(), rivermigrate.DirectionUp, nil)
		}
		if err == nil {
			jobDB.bytes, err = os.ReadFile(path)
		}
		jobDB.err = err
	})
	require.NoError(t, jobDB.err)
	path := filepath.Join(t.TempDir(), "jobs.db")
	require.NoError(t, os.WriteFile(path, jobDB.bytes, 0o600))
	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	tx, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback() })
	return tx
}

// workerBundle is a store, a fake WeCom and the pipeline's workers, each
// worked one job at a time with rivertest.
type workerBundle struct {
	db    *store.DB
	wecom *pipelinetest.FakeWeCom
	pl    *pipeline.Pipeline
}

func setupWorkers(t *testing.T, mutate func(*pipeline.Config)) *workerBundle {
	t.Helper()
	return setupWorkersAt(t, func() time.Time { return testNow }, mutate)
}

// setupWorkersAt is setupWorkers with the store's and the pipeline's clock.
func setupWorkersAt(t *testing.T, now func() time.Time, mutate func(*pipeline.Config)) *workerBundle {
	t.Helper()
	db := storetest.MustOpen(t, store.Config{Now: now, Jobs: pipeline.Policy{}})
	fw := &pipelinetest.FakeWeCom{}
	co, err := pipeline.NewCoalescer(fw, pipeline.CoalescerConfig{Window: time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(co.Close)
	cfg := pipeline.Config{Store: db, WeCom: fw, Coalescer: co, Now: now}
	if mutate != nil {
		mutate(&cfg)
	}
	pl, err := pipeline.New(cfg)
	require.NoError(t, err)
	return &workerBundle{db: db, wecom: fw, pl: pl}
}

// withAttempt makes the job's attempt the nth (n > 1 is a retry).
func withAttempt(n int) func(*rivertype.JobRow) {
	return func(j *rivertype.JobRow) { j.Attempt = n - 1 }
}

// withMetadata gives the job metadata, e.g. what River stored after an
// earlier attempt (res.Job.Metadata), to work its next attempt.
func withMetadata(m []byte) func(*rivertype.JobRow) {
	return func(j *rivertype.JobRow) { j.Metadata = m }
}

// work inserts a job with args in a scratch transaction, works it with the
// pipeline's worker for its kind, and returns River's outcome.
func work[T river.JobArgs](t *testing.T, b *workerBundle, args T, opts ...func(*rivertype.JobRow)) (*rivertest.WorkResult, error) {
	t.Helper()
	tx := jobTx(t)
	worker := pipeline.WorkerOf[T](b.pl)
	require.NotNil(t, worker, "no worker for %s", args.Kind())
	w := rivertest.NewWorker(t, riversqlite.New(nil), &river.Config{}, worker)
	client, err := river.NewClient(riversqlite.New(nil), &river.Config{})
	require.NoError(t, err)
	// rivertest reads the row back before working it and keeps only the
	// attempt from ins.Job, so metadata must go in with the insert.
	var row rivertype.JobRow
	for _, o := range opts {
		o(&row)
	}
	ins, err := client.InsertTx(t.Context(), tx, args, &river.InsertOpts{Metadata: row.Metadata})
	require.NoError(t, err)
	for _, o := range opts {
		o(ins.Job)
	}
	return w.WorkJob(t.Context(), t, tx, ins.Job)
}

// mustWork is work for a job expected to end without an error of its own
// (completed, snoozed or cancelled).
func mustWork[T river.JobArgs](t *testing.T, b *workerBundle, args T, opts ...func(*rivertype.JobRow)) *rivertest.WorkResult {
	t.Helper()
	res, err := work(t, b, args, opts...)
	require.NoError(t, err)
	return res
}

// mustComplete works a job (see mustWork) and requires that it completed.
func mustComplete[T river.JobArgs](t *testing.T, b *workerBundle, args T, opts ...func(*rivertype.JobRow)) {
	t.Helper()
	require.Equal(t, river.EventKindJobCompleted, mustWork(t, b, args, opts...).EventKind)
}

// lookupFails makes every batch pending-id lookup answer no result and err.
func (b *workerBundle) lookupFails(err error) {
	b.wecom.ExternalUserIDToPendingIDFunc = func(context.Context, string, string, []string) ([]wecom.PendingResult, error) {
		return nil, err
	}
}

// setupFailingLookup stores an add event whose pending-id lookup answers no
// result and err.
func setupFailingLookup(t *testing.T, err error) (*workerBundle, *store.Event) {
	t.Helper()
	b := setupWorkers(t, nil)
	ev := b.saveAdd(t)
	b.lookupFails(err)
	return b, ev
}

// batchError is the batch pending-id lookup's API error with code.
func batchError(code int) error {
	return apiError("corpgroup/batch/external_userid_to_pending_id", code)
}

// saveAdd stores an add_external_contact event and returns it.
func (b *workerBundle) saveAdd(t *testing.T) *store.Event {
	t.Helper()
	ev := storetest.NewEvent(store.KindAddExternalContact)
	_, err := b.db.SaveEvent(t.Context(), ev)
	require.NoError(t, err)
	return ev
}

// event reads a stored event back.
func (b *workerBundle) event(t *testing.T, id int64) *store.Event {
	t.Helper()
	return storetest.MustEvent(t, b.db, id)
}

// linksOf reads the links of the fan unionID.
func (b *workerBundle) linksOf(t *testing.T, unionID string) []store.Link {
	t.Helper()
	links, err := b.db.FindLinks(t.Context(), store.LinkFilter{UnionID: unionID})
	require.NoError(t, err)
	return links
}

// registerFan stores a fan holding pendingID.
func (b *workerBundle) registerFan(t *testing.T, unionID, pendingID string) {
	t.Helper()
	storetest.AddFan(t, b.db, unionID, pendingID)
}

func resolveArgs(ev *store.Event) pipeline.ResolveArgs {
	return pipeline.ResolveArgs{EventID: ev.ID, CorpID: ev.CorpID, ExternalUserID: ev.ExternalUserID, UserID: ev.UserID}
}

func apiError(api string, code int) error {
	return &wecom.APIError{API: api, Code: code, Msg: "test"}
}

func TestResolveWorker(t *testing.T) {
	t.Parallel()

	t.Run("LinksRegisteredFan", func(t *testing.T) {
		t.Parallel()
		b := setupWorkers(t, nil)
		b.registerFan(t, "test-u1", "p-1")
		ev := b.saveAdd(t)
		b.wecom.ExternalUserIDToPendingIDFunc = func(_ context.Context, _, _ string, ids []string) ([]wecom.PendingResult, error) {
			return []wecom.PendingResult{{ExternalUserID: ids[0], PendingID: "p-1"}}, nil
		}

		mustComplete(t, b, resolveArgs(ev))
		require.Equal(t, store.EventResolved, b.event(t, ev.ID).State)
		links := b.linksOf(t, "test-u1")
		require.Len(t, links, 1)
		require.Equal(t, ev.ExternalUserID, links[0].ExternalUserID)
	})

	t.Run("NotCustomerYetSnoozesOnce", func(t *testing.T) {
		t.Parallel()
		b := setupWorkers(t, func(c *pipeline.Config) { c.NotCustomerYetDelay = time.Hour })
		ev := b.saveAdd(t)
		b.lookupFails(batchError(wecom.CodeNotCustomerYet))

		res := mustWork(t, b, resolveArgs(ev))
		require.Equal(t, river.EventKindJobSnoozed, res.EventKind)
		require.WithinDuration(t, time.Now().Add(time.Hour), res.Job.ScheduledAt, 10*time.Minute, "snoozed for NotCustomerYetDelay")
		require.Equal(t, store.EventPending, b.event(t, ev.ID).State)

		// The retry records the customer as unmatched instead.
		mustComplete(t, b, resolveArgs(ev), withMetadata(res.Job.Metadata))
		got := b.event(t, ev.ID)
		require.Equal(t, store.EventUnmatched, got.State)
	})

	t.Run("EmptyAnswerSnoozesThenUnmatched", func(t *testing.T) {
		t.Parallel()
		b := setupWorkers(t, nil)
		ev := b.saveAdd(t)
		b.wecom.ExternalUserIDToPendingIDFunc = func(context.Context, string, string, []string) ([]wecom.PendingResult, error) {
			return nil, nil
		}
		res := mustWork(t, b, resolveArgs(ev))
		require.Equal(t, river.EventKindJobSnoozed, res.EventKind)
		mustComplete(t, b, resolveArgs(ev), withMetadata(res.Job.Metadata))
		require.Equal(t, store.EventUnmatched, b.event(t, ev.ID).State)
	})

	// The grace for a fresh add counts answers, not attempts: a transient
	// error (an attempt), or a rate-limit snooze, before the first answer
	// must not use it up.
	for name, opt := range map[string]func(*rivertype.JobRow){
		"AfterTransientError":  withAttempt(2),
		"AfterRateLimitSnooze": withMetadata([]byte(`{"snoozes":1}`)),
	} {
		t.Run("FirstEmptyAnswerSnoozes"+name, func(t *testing.T) {
			t.Parallel()
			b, ev := setupFailingLookup(t, nil)
			res := mustWork(t, b, resolveArgs(ev), opt)
			require.Equal(t, river.EventKindJobSnoozed, res.EventKind)
			require.Equal(t, store.EventPending, b.event(t, ev.ID).State)
		})
	}

	t.Run("RateLimitSnoozes", func(t *testing.T) {
		t.Parallel()
		b, ev := setupFailingLookup(t, batchError(wecom.CodeAPIFreqOutOfLimit))
		require.Equal(t, river.EventKindJobSnoozed, mustWork(t, b, resolveArgs(ev)).EventKind)
		require.Equal(t, store.EventPending, b.event(t, ev.ID).State)
	})

	t.Run("PermanentErrorCancelsAndFailsEvent", func(t *testing.T) {
		t.Parallel()
		b, ev := setupFailingLookup(t, batchError(wecom.CodeNoPermission))
		require.Equal(t, river.EventKindJobCancelled, mustWork(t, b, resolveArgs(ev)).EventKind)
		got := b.event(t, ev.ID)
		require.Equal(t, store.EventFailed, got.State)
		require.Contains(t, got.Reason, "errcode 48002")
	})

	t.Run("RetryAfterSnoozesThatLong", func(t *testing.T) {
		t.Parallel()
		b, ev := setupFailingLookup(t, &wecom.HTTPStatusError{API: "corpgroup/batch/external_userid_to_pending_id", StatusCode: 429, RetryAfter: 3 * time.Hour})
		res := mustWork(t, b, resolveArgs(ev))
		require.Equal(t, river.EventKindJobSnoozed, res.EventKind)
		require.WithinDuration(t, time.Now().Add(3*time.Hour), res.Job.ScheduledAt, 10*time.Minute, "snoozed for Retry-After, not RateLimitDelay")
		require.Equal(t, store.EventPending, b.event(t, ev.ID).State)
	})

	// -1, and any HTTP status (a 403 from WeCom's edge or a proxy), go back
	// to River, which retries with backoff; the event never fails for good.
	for name, fault := range map[string]error{
		"SystemBusy": apiError("corpgroup/batch/external_userid_to_pending_id", wecom.CodeSystemBusy),
		"HTTP403":    &wecom.HTTPStatusError{API: "corpgroup/batch/external_userid_to_pending_id", StatusCode: 403},
	} {
		t.Run("TransientErrorRetries"+name, func(t *testing.T) {
			t.Parallel()
			b, ev := setupFailingLookup(t, fault)
			res, err := work(t, b, resolveArgs(ev))
			require.ErrorIs(t, err, fault)
			require.Equal(t, river.EventKindJobFailed, res.EventKind, "River retries with backoff")
			require.Equal(t, store.EventPending, b.event(t, ev.ID).State)
		})
	}
}

func TestEndLinkWorker(t *testing.T) {
	t.Parallel()

	t.Run("EndsTheCustomersLinks", func(t *testing.T) {
		t.Parallel()
		b := setupWorkers(t, nil)
		b.registerFan(t, "test-u1", "p-1")
		storetest.Resolve(t, b.db, store.Resolution{CorpID: "wwtestcorp", ExternalUserID: "wmtest1", PendingID: "p-1"})
		del := storetest.NewEvent(store.KindDelExternalContact)
		del.ExternalUserID, del.CreateTime = "wmtest1", testNow.Add(time.Second) // after the add
		_, err := b.db.SaveEvent(t.Context(), del)
		require.NoError(t, err)

		mustComplete(t, b, pipeline.EndLinkArgs{EventID: del.ID, CorpID: del.CorpID, ExternalUserID: del.ExternalUserID, UserID: del.UserID})
		links := b.linksOf(t, "test-u1")
		require.Len(t, links, 1)
		require.False(t, links[0].Active)
		require.Equal(t, store.EventResolved, b.event(t, del.ID).State)
	})
}

func TestRegisterWorker(t *testing.T) {
	t.Parallel()

	fan := store.FanInput{UnionID: "test-u1", OpenID: "o-test-u1"}
	setup := func(t *testing.T) *workerBundle {
		b := setupWorkers(t, nil)
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{fan}, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)
		return b
	}

	t.Run("RecordsPendingID", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.wecom.UnionIDToPendingIDFunc = pipelinetest.PendingIDs("p-1")
		mustComplete(t, b, pipeline.RegisterArgs{UnionID: fan.UnionID, OpenID: fan.OpenID})
		got, err := b.db.FindFan(t.Context(), fan.UnionID)
		require.NoError(t, err)
		require.Equal(t, "p-1", got.PendingID)
	})

	t.Run("PermanentErrorCancelsAndFailsFan", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.wecom.UnionIDToPendingIDFunc = func(context.Context, string, string) (string, error) {
			return "", apiError("corpgroup/unionid_to_pending_id", 610014)
		}
		require.Equal(t, river.EventKindJobCancelled, mustWork(t, b, pipeline.RegisterArgs{UnionID: fan.UnionID, OpenID: fan.OpenID}).EventKind)
		got, err := b.db.FindFan(t.Context(), fan.UnionID)
		require.NoError(t, err)
		require.Equal(t, store.FanFailed, got.State)
		require.Contains(t, got.LastError, "610014")
	})

	t.Run("HTTP429KeepsFan", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.wecom.UnionIDToPendingIDFunc = func(context.Context, string, string) (string, error) {
			return "", &wecom.HTTPStatusError{API: "corpgroup/unionid_to_pending_id", StatusCode: 429}
		}
		res, err := work(t, b, pipeline.RegisterArgs{UnionID: fan.UnionID, OpenID: fan.OpenID})
		require.Error(t, err)
		require.Equal(t, river.EventKindJobFailed, res.EventKind, "River retries with backoff")
		got, err := b.db.FindFan(t.Context(), fan.UnionID)
		require.NoError(t, err)
		require.Equal(t, store.FanNew, got.State)
	})

	t.Run("RateLimitSnoozesAndKeepsFan", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.wecom.UnionIDToPendingIDFunc = func(context.Context, string, string) (string, error) {
			return "", apiError("corpgroup/unionid_to_pending_id", wecom.CodeAPIFreqOutOfLimit)
		}
		require.Equal(t, river.EventKindJobSnoozed, mustWork(t, b, pipeline.RegisterArgs{UnionID: fan.UnionID, OpenID: fan.OpenID}).EventKind)
		got, err := b.db.FindFan(t.Context(), fan.UnionID)
		require.NoError(t, err)
		require.Equal(t, store.FanNew, got.State)
	})
}

func TestBackfillWorker(t *testing.T) {
	t.Parallel()
	b := setupWorkers(t, nil)
	b.registerFan(t, "test-u1", "p-1")
	b.wecom.UnionIDToExternalUserIDFunc = func(context.Context, string, string, string) ([]wecom.ExternalUserIDInfo, error) {
		return []wecom.ExternalUserIDInfo{{CorpID: "wwdealer", ExternalUserID: "wmold"}}, nil
	}
	mustComplete(t, b, pipeline.BackfillArgs{UnionID: "test-u1", OpenID: "o-test-u1"})
	links := b.linksOf(t, "test-u1")
	require.Len(t, links, 1)
	require.Equal(t, "wmold", links[0].ExternalUserID)

	// A fan the store does not know is cancelled, not retried.
	res := mustWork(t, b, pipeline.BackfillArgs{UnionID: "test-nobody", OpenID: "o"})
	require.Equal(t, river.EventKindJobCancelled, res.EventKind)
}

func TestRenewWorker(t *testing.T) {
	t.Parallel()
	// queued lists the registration queue's head as unionid:class.
	queued := func(t *testing.T, b *workerBundle) []string {
		t.Helper()
		var out []string
		for _, f := range storetest.MustQueue(t, b.db, 10) {
			out = append(out, fmt.Sprintf("%s:%d", f.UnionID, f.Class))
		}
		return out
	}

	t.Run("QueuesFansWhoseInteractiveRegistrationWasCutOff", func(t *testing.T) {
		t.Parallel()
		clock := fakeclock.New(testNow)
		b := setupWorkersAt(t, clock.Now, nil)
		// What Register stores before it calls WeCom, left so by a process
		// killed during the call.
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-u1", OpenID: "o-1"}}, store.RegisterOpts{Priority: store.QueueInteractive, NoJob: true})
		require.NoError(t, err)
		mustComplete(t, b, pipeline.RenewArgs{})
		require.Empty(t, queued(t, b), "a call may still be in flight")
		clock.Advance(11 * time.Minute)
		mustComplete(t, b, pipeline.RenewArgs{})
		require.Equal(t, []string{"test-u1:1"}, queued(t, b))
	})

	t.Run("QueuesExpiringFansHighestPriorityFirst", func(t *testing.T) {
		t.Parallel()
		b := setupWorkers(t, func(c *pipeline.Config) { c.RenewBefore = 100 * 24 * time.Hour; c.RenewBatch = 2 })
		for _, u := range []string{"test-u1", "test-u2", "test-u3"} {
			b.registerFan(t, u, "p-"+u)
		}
		require.NoError(t, b.db.SetFanPriority(t.Context(), "test-u3", 90))
		require.NoError(t, b.db.SetFanPriority(t.Context(), "test-u1", 10))

		mustComplete(t, b, pipeline.RenewArgs{})
		require.Equal(t, []string{"test-u3:4", "test-u2:4"}, queued(t, b), "RenewBatch fans a run, by priority")
		mustComplete(t, b, pipeline.RenewArgs{})
		require.Equal(t, []string{"test-u3:4", "test-u2:4", "test-u1:4"}, queued(t, b), "the next run queues the fans not queued yet")
	})

	t.Run("QueuesWhatTheQuotaServesBeforeTheNextRun", func(t *testing.T) {
		t.Parallel()
		// 10 calls before the next run (5 spare and 5 more within the hour):
		// a run queues every due fan up to that, RenewBatch at a time, not
		// one batch an hour behind a quota with room for ten.
		b := setupWorkers(t, func(c *pipeline.Config) {
			c.RenewBefore, c.RenewBatch, c.RenewInterval = 100*24*time.Hour, 2, time.Hour
			c.Quota = &pipelinetest.FakeQuota{Windows: []quota.Usage{{Length: time.Hour, Limit: 5}}}
		})
		var want []string
		for i := range 12 {
			u := fmt.Sprintf("test-u%02d", i)
			b.registerFan(t, u, "p-"+u)
			require.NoError(t, b.db.SetFanPriority(t.Context(), u, 90-i))
			want = append(want, u+":4")
		}
		mustComplete(t, b, pipeline.RenewArgs{})
		require.Equal(t, want[:10], queued(t, b), "ten, by priority")
	})

	t.Run("QueuedWithBulkRegistrationsByPriority", func(t *testing.T) {
		t.Parallel()
		b := setupWorkers(t, func(c *pipeline.Config) { c.RenewBefore = 100 * 24 * time.Hour })
		b.registerFan(t, "test-live-high", "p-1")
		b.registerFan(t, "test-live-low", "p-2")
		require.NoError(t, b.db.SetFanPriority(t.Context(), "test-live-high", 80))
		require.NoError(t, b.db.SetFanPriority(t.Context(), "test-live-low", 20))
		_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-new", OpenID: "o"}}, store.RegisterOpts{Priority: store.QueueBulk})
		require.NoError(t, err)
		mustComplete(t, b, pipeline.RenewArgs{})
		require.Equal(t, []string{"test-live-high:4", "test-new:3", "test-live-low:4"}, queued(t, b),
			"a renewal waits behind a first registration of a fan the brand values more, not behind every one")
	})
}

func TestPruneWorker(t *testing.T) {
	t.Parallel()
	// Ensure the prune job drops quota buckets older than every window and
	// keeps the ones a window still counts.
	b := setupWorkers(t, nil)
	old := testNow.Add(-pipeline.QuotaRetention - time.Hour).Unix()
	recent := testNow.Add(-31 * 24 * time.Hour).Unix()
	require.NoError(t, b.db.AddQuota(t.Context(), "k", old, 1))
	require.NoError(t, b.db.AddQuota(t.Context(), "k", recent, 2))
	mustComplete(t, b, pipeline.PruneArgs{})
	got, err := b.db.LoadQuota(t.Context(), "k", 0)
	require.NoError(t, err)
	require.Equal(t, map[int64]int64{recent: 2}, got)
}

// TestErrorHandler_LastAttemptMarksEventFailed: a job River discards after
// its last attempt must not leave its event pending forever without a reason.
// River calls its ErrorHandler with the failed job; rivertest installs its
// own, so the test hands the job River returned to the pipeline's.
func TestErrorHandler_LastAttemptMarksEventFailed(t *testing.T) {
	t.Parallel()
	b := setupWorkers(t, nil)
	ev := b.saveAdd(t)
	b.wecom.ExternalUserIDToPendingIDFunc = func(context.Context, string, string, []string) ([]wecom.PendingResult, error) {
		return nil, apiError("corpgroup/batch/external_userid_to_pending_id", wecom.CodeSystemBusy)
	}

	// Not the last attempt: River will retry, the event stays pending.
	res, err := work(t, b, resolveArgs(ev), withAttempt(2))
	require.Error(t, err)
	require.NotEqual(t, rivertype.JobStateDiscarded, res.Job.State)
	require.Nil(t, b.pl.HandleError(t.Context(), res.Job, err), "River's retry policy decides")
	require.Equal(t, store.EventPending, b.event(t, ev.ID).State)

	// The last attempt: River discards the job, so the event fails with the reason.
	res, err = work(t, b, resolveArgs(ev), withAttempt(river.MaxAttemptsDefault))
	require.Error(t, err)
	require.Equal(t, rivertype.JobStateDiscarded, res.Job.State)
	b.pl.HandleError(t.Context(), res.Job, err)
	got := b.event(t, ev.ID)
	require.Equal(t, store.EventFailed, got.State)
	require.Contains(t, got.Reason, "errcode -1")
	require.Contains(t, got.Reason, "gave up after 25 attempts")
}

// TestErrorHandler_LastAttemptMarksFanFailed is the same for a registration.
func TestErrorHandler_LastAttemptMarksFanFailed(t *testing.T) {
	t.Parallel()
	b := setupWorkers(t, nil)
	fan := store.FanInput{UnionID: "test-u1", OpenID: "o-test-u1"}
	_, err := b.db.RegisterFans(t.Context(), []store.FanInput{fan}, store.RegisterOpts{NoJob: true})
	require.NoError(t, err)
	b.wecom.UnionIDToPendingIDFunc = func(context.Context, string, string) (string, error) {
		return "", apiError("corpgroup/unionid_to_pending_id", wecom.CodeSystemBusy)
	}
	res, err := work(t, b, pipeline.RegisterArgs{UnionID: fan.UnionID, OpenID: fan.OpenID}, withAttempt(river.MaxAttemptsDefault))
	require.Error(t, err)
	b.pl.HandleError(t.Context(), res.Job, err)
	got, err := b.db.FindFan(t.Context(), fan.UnionID)
	require.NoError(t, err)
	require.Equal(t, store.FanFailed, got.State)
	require.Contains(t, got.LastError, "errcode -1")
}

func TestReconcileWorker(t *testing.T) {
	t.Parallel()
	// existing answers unionid_to_external_userid: the customers of each
	// fan, or err for the fans in fail.
	existing := func(b *workerBundle, found map[string][]wecom.ExternalUserIDInfo, fail map[string]error) *[]string {
		var asked []string
		b.wecom.UnionIDToExternalUserIDFunc = func(_ context.Context, unionID, _, corpID string) ([]wecom.ExternalUserIDInfo, error) {
			asked = append(asked, unionID)
			if corpID != "" {
				return nil, errors.New("the check asks about every corp")
			}
			if err := fail[unionID]; err != nil {
				return nil, err
			}
			return found[unionID], nil
		}
		return &asked
	}

	t.Run("ChecksNewFansOnceAndLinksWhatIsFound", func(t *testing.T) {
		t.Parallel()
		b := setupWorkers(t, func(c *pipeline.Config) { c.CheckExisting = true })
		b.registerFan(t, "test-u1", "p-1")
		b.registerFan(t, "test-u2", "p-2")
		asked := existing(b, map[string][]wecom.ExternalUserIDInfo{"test-u1": {{CorpID: "wwdealer", ExternalUserID: "wmold"}}}, nil)
		mustComplete(t, b, pipeline.ReconcileArgs{})
		require.ElementsMatch(t, []string{"test-u1", "test-u2"}, *asked)
		require.Len(t, b.linksOf(t, "test-u1"), 1)
		mustWork(t, b, pipeline.ReconcileArgs{})
		require.Len(t, *asked, 2, "a checked fan is not asked again")
	})

	t.Run("OffChecksOnlySweeps", func(t *testing.T) {
		t.Parallel()
		b := setupWorkers(t, nil)
		b.registerFan(t, "test-u1", "p-1")
		asked := existing(b, nil, nil)
		mustWork(t, b, pipeline.ReconcileArgs{})
		require.Empty(t, *asked)

		s, started, err := b.pl.Reconcile(t.Context(), time.Time{})
		require.NoError(t, err)
		require.True(t, started)
		require.EqualValues(t, 1, s.Remaining)
		mustWork(t, b, pipeline.ReconcileArgs{})
		require.Equal(t, []string{"test-u1"}, *asked)
		mustWork(t, b, pipeline.ReconcileArgs{})
		s, err = b.pl.LatestSweep(t.Context())
		require.NoError(t, err)
		require.False(t, s.Running(), "finished once nothing remains")
		require.EqualValues(t, 1, s.Checked)
	})

	t.Run("SweepEndsWhenNoFanIsLeftNotWhenRemainingSaysSo", func(t *testing.T) {
		t.Parallel()
		b := setupWorkers(t, nil)
		b.registerFan(t, "test-u1", "p-1")
		b.registerFan(t, "test-u2", "p-2")
		_, err := b.db.SQL().ExecContext(t.Context(), `UPDATE fans SET state = 'failed' WHERE unionid = 'test-u2'`)
		require.NoError(t, err)
		asked := existing(b, nil, nil)
		s, _, err := b.pl.Reconcile(t.Context(), time.Time{})
		require.NoError(t, err)
		require.EqualValues(t, 1, s.Remaining)
		// A fan retried into the registered state joins the running sweep;
		// the estimate counted only the fans there at its start.
		_, err = b.db.SQL().ExecContext(t.Context(), `UPDATE fans SET state = 'registered' WHERE unionid = 'test-u2'`)
		require.NoError(t, err)
		_, err = b.db.RecordCheck(t.Context(), "test-u1", nil, s.ID)
		require.NoError(t, err)
		s, err = b.pl.LatestSweep(t.Context())
		require.NoError(t, err)
		require.Zero(t, s.Remaining)

		mustWork(t, b, pipeline.ReconcileArgs{})
		require.Equal(t, []string{"test-u2"}, *asked)
		mustWork(t, b, pipeline.ReconcileArgs{})
		s, err = b.pl.LatestSweep(t.Context())
		require.NoError(t, err)
		require.False(t, s.Running(), "finished once its query found nobody")
		require.EqualValues(t, 2, s.Checked)
	})

	t.Run("LeavesATenthOfTheQuotaToInteractiveRegistrations", func(t *testing.T) {
		t.Parallel()
		q := &pipelinetest.FakeQuota{Windows: []quota.Usage{{Length: time.Hour, Limit: 20, Used: 16}}}
		b := setupWorkers(t, func(c *pipeline.Config) { c.CheckExisting = true; c.ExistingQuota = q })
		for _, u := range []string{"test-u1", "test-u2", "test-u3", "test-u4"} {
			b.registerFan(t, u, "p-"+u)
		}
		asked := existing(b, nil, nil)
		mustWork(t, b, pipeline.ReconcileArgs{})
		require.Len(t, *asked, 2, "4 calls spare, 2 kept back")
	})

	t.Run("RefusedFanCountsAsCheckedOtherErrorsStopTheRun", func(t *testing.T) {
		t.Parallel()
		b := setupWorkers(t, func(c *pipeline.Config) { c.CheckExisting = true })
		b.registerFan(t, "test-u1", "p-1")
		b.registerFan(t, "test-u2", "p-2")
		fail := map[string]error{
			"test-u2": apiError("corpgroup/unionid_to_external_userid", 610014),
			"test-u1": apiError("corpgroup/unionid_to_external_userid", wecom.CodeIPNotAllowed),
		}
		asked := existing(b, nil, fail)
		mustComplete(t, b, pipeline.ReconcileArgs{})
		require.Equal(t, []string{"test-u2", "test-u1"}, *asked, "newest first; 60020 ends the run")
		delete(fail, "test-u1")
		mustWork(t, b, pipeline.ReconcileArgs{})
		require.Equal(t, []string{"test-u2", "test-u1", "test-u1"}, *asked, "the refused fan is not asked again, the other is")
	})
}

func TestChatMembersWorker(t *testing.T) {
	t.Parallel()
	created := func(t *testing.T, b *workerBundle) *store.Event {
		ev := storetest.NewEvent(store.KindChatCreate)
		_, err := b.db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.Equal(t, store.EventPending, ev.State)
		return ev
	}
	args := func(ev *store.Event) pipeline.ChatMembersArgs {
		return pipeline.ChatMembersArgs{EventID: ev.ID, CorpID: ev.CorpID, ChatID: ev.ChatID}
	}

	t.Run("ResolvesTheCustomersNotTheStaff", func(t *testing.T) {
		t.Parallel()
		b := setupWorkers(t, nil)
		ev := created(t, b)
		b.wecom.GroupChatMembersFunc = func(_ context.Context, corpID, chatID string) ([]wecom.ChatMember, error) {
			require.Equal(t, ev.CorpID, corpID)
			require.Equal(t, ev.ChatID, chatID)
			return []wecom.ChatMember{
				{UserID: "owner", Type: wecom.ChatMemberStaff},
				{UserID: "wmtest-a", Type: wecom.ChatMemberCustomer},
				{UserID: "wmtest-b", Type: wecom.ChatMemberCustomer},
			}, nil
		}
		mustComplete(t, b, args(ev))
		var got []string
		for _, j := range storetest.JobsOfKind(t, b.db, pipeline.ResolveArgs{}.Kind()) {
			var a pipeline.ResolveArgs
			require.NoError(t, json.Unmarshal(j.EncodedArgs, &a))
			require.Equal(t, ev.ChatID, a.ChatID)
			require.Equal(t, ev.ID, a.EventID)
			got = append(got, a.ExternalUserID)
		}
		require.ElementsMatch(t, []string{"wmtest-a", "wmtest-b"}, got)
	})

	t.Run("RefusedLookupFailsTheEvent", func(t *testing.T) {
		t.Parallel()
		b := setupWorkers(t, nil)
		ev := created(t, b)
		b.wecom.GroupChatMembersFunc = func(context.Context, string, string) ([]wecom.ChatMember, error) {
			return nil, apiError("externalcontact/groupchat/get", wecom.CodeNoPermission)
		}
		require.Equal(t, river.EventKindJobCancelled, mustWork(t, b, args(ev)).EventKind)
		require.Equal(t, store.EventFailed, b.event(t, ev.ID).State)
	})
}

// TestResolveWorker_BlockedAPIWaitsForTheProbe: a configuration fault
// (60020: egress IP not trusted) makes the work wait until the client's
// next probe, never fail: fixing the console lets it flow again.
func TestResolveWorker_BlockedAPIWaitsForTheProbe(t *testing.T) {
	t.Parallel()
	probe := testNow.Add(wecom.MinProbeInterval)
	b, ev := setupFailingLookup(t, &wecom.BlockedError{
		API: wecom.APIExternalUserIDToPendingID, RetryAt: probe,
		Err: &wecom.APIError{API: wecom.APIExternalUserIDToPendingID, Code: wecom.CodeIPNotAllowed, Msg: "from ip: 203.0.113.7"},
	})
	res := mustWork(t, b, resolveArgs(ev), withAttempt(25))
	require.Equal(t, river.EventKindJobSnoozed, res.EventKind)
	require.Equal(t, store.EventPending, b.event(t, ev.ID).State, "nothing fails for good")
	require.Nil(t, b.pl.HandleError(t.Context(), res.Job, nil))
}

// TestRegister_BlockedAPIQueues: an interactive registration meeting a
// configuration fault is queued (202), not refused (422), and the fan is
// not failed.
func TestRegister_BlockedAPIQueues(t *testing.T) {
	t.Parallel()
	b := setupWorkers(t, nil)
	b.wecom.UnionIDToPendingIDFunc = func(context.Context, string, string) (string, error) {
		return "", &wecom.BlockedError{API: wecom.APIUnionIDToPendingID, RetryAt: testNow.Add(time.Minute),
			Err: &wecom.APIError{API: wecom.APIUnionIDToPendingID, Code: wecom.CodeNoPermission, Msg: "api forbidden"}}
	}
	got, err := b.pl.Register(t.Context(), store.FanInput{UnionID: "test-u1", OpenID: "o-test-u1"})
	require.NoError(t, err)
	require.Equal(t, pipeline.Queued, got)
	f, err := b.db.FindFan(t.Context(), "test-u1")
	require.NoError(t, err)
	require.Equal(t, store.FanNew, f.State)
}

// TestRegister_ClientGoneMidCall: the client of POST /v1/fans hangs up
// while WeCom is slow. An answer that came is recorded; without one the fan
// is queued, not left stored and unqueued where nothing would register it.
func TestRegister_ClientGoneMidCall(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		answer func() (string, error)
		check  func(t *testing.T, b *workerBundle)
	}{
		{"WithoutAnAnswerTheFanIsQueued", func() (string, error) { return "", context.Canceled }, func(t *testing.T, b *workerBundle) {
			require.Equal(t, []string{"test-u1"}, storetest.QueuedUnionIDs(t, b.db, 10))
		}},
		{"AnAnswerIsRecorded", func() (string, error) { return "p-1", nil }, func(t *testing.T, b *workerBundle) {
			f, err := b.db.FindFan(t.Context(), "test-u1")
			require.NoError(t, err)
			require.Equal(t, store.FanRegistered, f.State)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupWorkers(t, nil)
			ctx, cancel := context.WithCancel(t.Context())
			b.wecom.UnionIDToPendingIDFunc = func(context.Context, string, string) (string, error) {
				cancel()
				return tc.answer()
			}
			_, _ = b.pl.Register(ctx, store.FanInput{UnionID: "test-u1", OpenID: "o-test-u1"})
			tc.check(t, b)
		})
	}
}

// TestNotifyWorker_WaitsForAnotherSendersClaim: while another process's
// sender holds a link's next notification, a job for that link delivers
// nothing and waits; once it is free the job delivers it.
func TestNotifyWorker_WaitsForAnotherSendersClaim(t *testing.T) {
	t.Parallel()
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		posts.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	b := setupWorkers(t, func(c *pipeline.Config) { c.Webhook = &pipeline.Webhook{URL: srv.URL, Secret: "test-secret"} })
	b.registerFan(t, "test-u1", "p-1")
	links := storetest.Resolve(t, b.db, store.Resolution{CorpID: "wwtestcorp", ExternalUserID: "wmtest1", PendingID: "p-1"})
	require.Len(t, links, 1)

	held, err := b.db.ClaimOutbox(t.Context(), links[0].ID, time.Minute) // the other process
	require.NoError(t, err)
	res := mustWork(t, b, pipeline.NotifyArgs{LinkID: links[0].ID})
	require.Equal(t, river.EventKindJobSnoozed, res.EventKind)
	require.Zero(t, posts.Load(), "nothing delivered past another sender's claim")

	require.NoError(t, b.db.MarkOutbox(t.Context(), held, "webhook: status 502")) // it failed
	mustComplete(t, b, pipeline.NotifyArgs{LinkID: links[0].ID})
	require.EqualValues(t, 1, posts.Load())
}

// TestForecast_OverCapacity: with more live fans than the month's quota can
// renew every 83 days, the forecast says how many will expire.
func TestForecast_OverCapacity(t *testing.T) {
	t.Parallel()
	month := 31 * 24 * time.Hour
	q := &pipelinetest.FakeQuota{Windows: []quota.Usage{{Length: month, Limit: 31}}}
	b := setupWorkers(t, func(c *pipeline.Config) { c.Quota = q })
	for i := range 90 {
		b.registerFan(t, fmt.Sprintf("test-u%d", i), fmt.Sprintf("p-%d", i))
	}
	f, err := b.pl.Forecast(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 90, f.LivePendingIDs)
	require.EqualValues(t, 83, f.Sustainable, "31 a month keeps 83 fans renewed every 83 days")
	require.EqualValues(t, 7, f.OverCapacity)
}

// TestForecast_QueueOrder: the backlog is forecast in the order the
// registrar works it: interactive fans, then by priority with renewals and
// first registrations together, and each class done with its last fan.
func TestForecast_QueueOrder(t *testing.T) {
	t.Parallel()
	// The hour's 60 calls are spent: one more a minute.
	b := setupWorkers(t, func(c *pipeline.Config) {
		c.Quota = &pipelinetest.FakeQuota{Windows: []quota.Usage{{Length: time.Hour, Limit: 60, Used: 60}}}
	})
	queue := func(class int, fans ...store.FanInput) {
		t.Helper()
		_, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{Priority: class, Renew: class == store.QueueRenew})
		require.NoError(t, err)
	}
	queue(store.QueueBulk, store.FanInput{UnionID: "test-b90", OpenID: "o", Priority: 90}, store.FanInput{UnionID: "test-b10", OpenID: "o", Priority: 10})
	b.registerFan(t, "test-r50", "p-r50")
	queue(store.QueueRenew, store.FanInput{UnionID: "test-r50", OpenID: "o-test-r50"})
	queue(store.QueueInteractive, store.FanInput{UnionID: "test-i", OpenID: "o"})

	f, err := b.pl.Forecast(t.Context())
	require.NoError(t, err)
	at := func(n int64) time.Time { return testNow.Add(time.Duration(n) * time.Minute) } // the nth call from now
	require.Equal(t, []pipeline.PriorityBacklog{
		{Priority: 90, Count: 1, Done: at(2)}, {Priority: 50, Count: 1, Done: at(3)}, {Priority: 10, Count: 1, Done: at(4)},
	}, f.ByPriority)
	require.Equal(t, []pipeline.BacklogItem{
		{Name: "interactive", Count: 1, Done: at(1)},
		{Name: "bulk", Count: 2, Done: at(4)},
		{Name: "renewal", Count: 1, Done: at(3)},
	}, f.Registrations, "a renewal of priority 50 is done before a first registration of 10")
}

// TestForecast_ExpiringUnrenewed: the renewals due within 7 days that the
// week's calls cannot reach, when spent in queue order, are counted: the
// lowest-priority ones.
func TestForecast_ExpiringUnrenewed(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(testNow)
	week := 7 * 24 * time.Hour
	// The window is spent: 5 calls in the next 7 days.
	b := setupWorkersAt(t, clock.Now, func(c *pipeline.Config) {
		c.Quota = &pipelinetest.FakeQuota{Windows: []quota.Usage{{Length: week, Limit: 5, Used: 5}}}
	})
	fans := func(prefix string, n, priority int) []store.FanInput {
		var out []store.FanInput
		for i := range n {
			out = append(out, store.FanInput{UnionID: fmt.Sprintf("test-%s%d", prefix, i), OpenID: "o", Priority: priority})
		}
		return out
	}
	register := func(fans []store.FanInput) {
		t.Helper()
		_, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{NoJob: true})
		require.NoError(t, err)
		for _, f := range fans {
			_, err := b.db.RecordFanPendingID(t.Context(), f.UnionID, "p-"+f.UnionID)
			require.NoError(t, err)
		}
	}
	register(fans("high", 4, 90))
	register(fans("low", 3, 10))
	clock.Advance(store.PendingIDLifetime - 5*24*time.Hour) // all seven expire in 5 days
	_, err := b.db.RegisterFans(t.Context(), fans("new", 2, 50), store.RegisterOpts{Priority: store.QueueBulk})
	require.NoError(t, err)
	_, err = b.db.RegisterFans(t.Context(), fans("now", 1, 50), store.RegisterOpts{Priority: store.QueueInteractive})
	require.NoError(t, err)

	f, err := b.pl.Forecast(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 7, f.ExpiringWithin7Days)
	// 5 calls: the interactive fan, then the four of priority 90; the two
	// first registrations of 50 and the three renewals of 10 wait.
	require.EqualValues(t, 3, f.ExpiringUnrenewed)

	// Queued for renewal, the low fans are still short.
	_, err = b.db.RegisterFans(t.Context(), fans("low", 1, 10), store.RegisterOpts{Priority: store.QueueRenew, Renew: true})
	require.NoError(t, err)
	f, err = b.pl.Forecast(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 3, f.ExpiringUnrenewed)

	// First registrations raised above the renewals take two of the calls.
	for _, u := range []string{"test-new0", "test-new1"} {
		p := 95
		require.NoError(t, b.db.UpdateFan(t.Context(), u, store.FanUpdate{Priority: &p}))
	}
	f, err = b.pl.Forecast(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 5, f.ExpiringUnrenewed, "two of 90 and the three of 10")
}
