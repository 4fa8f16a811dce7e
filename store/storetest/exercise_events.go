package storetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
)

func (open exerciser) saveEvent(t *testing.T) {
	open.test(t, "OK", Policy{}, func(t *testing.T, b *bundle) {
		ev := NewEvent(store.KindAddExternalContact)

		inserted, err := b.db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.True(t, inserted)
		require.Positive(t, ev.ID)
		require.Equal(t, store.EventPending, ev.State)
		require.True(t, b.start.Equal(ev.ReceivedAt))
		require.Equal(t, ev, b.event(t, ev.ID))

		// Ensure the policy's job was committed with the event, available for work.
		rows := jobRows(t, b.db)
		require.Len(t, rows, 1)
		require.Equal(t, rivertype.JobStateAvailable, rows[0].State)
		require.Equal(t, []Job{{What: JobEvent, EventID: ev.ID, Subject: ev.ExternalUserID}}, Jobs(t, b.db))
	})

	open.test(t, "DuplicateIsNotAnError", Policy{}, func(t *testing.T, b *bundle) {
		ev := b.saveEvent(t, store.KindAddExternalContact)

		again := *ev
		again.ID, again.State, again.ReceivedAt = 0, "", time.Time{}
		b.clock.Advance(time.Minute)
		inserted, err := b.db.SaveEvent(t.Context(), &again)
		require.NoError(t, err)
		require.False(t, inserted)
		require.Equal(t, ev.ID, again.ID, "a duplicate reports the stored event")
		require.Equal(t, store.EventPending, again.State)
		require.True(t, ev.ReceivedAt.Equal(again.ReceivedAt))

		st, err := b.db.Status(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(1), st.EventsDuplicate)
		c := b.counts(t)
		require.Equal(t, int64(1), c.Events)
		require.Equal(t, int64(1), c.Jobs, "no second job")
	})

	open.test(t, "EveryPolicyJobCarriesTheEventID", Policy{}, func(t *testing.T, b *bundle) {
		ev := NewEvent(store.KindAddMember)
		ev.Members = []string{"wmtest-a", "wmtest-b", "wmtest-c"}
		inserted, err := b.db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.True(t, inserted)
		require.Equal(t, store.EventPending, ev.State)

		var want []Job
		for _, m := range ev.Members {
			want = append(want, Job{What: JobEvent, EventID: ev.ID, Subject: m})
		}
		require.Equal(t, want, Jobs(t, b.db))
	})

	open.test(t, "PolicyWithoutJobsIsRecorded", Policy{}, func(t *testing.T, b *bundle) {
		ev := NewEvent(store.KindAddMember)
		ev.Members = nil // Policy has no job for a chat event without members
		_, err := b.db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.Equal(t, store.EventRecorded, ev.State)
		require.Equal(t, store.EventRecorded, b.event(t, ev.ID).State)
		require.Zero(t, b.counts(t).Jobs)
	})

	open.test(t, "IgnoredHasNoJob", Policy{}, func(t *testing.T, b *bundle) {
		ev := NewEvent(store.KindIgnored)
		ev.Reason = "unknown change type"
		inserted, err := b.db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.True(t, inserted)
		require.Equal(t, store.EventIgnored, ev.State)
		require.Zero(t, b.counts(t).Jobs)

		got := b.event(t, ev.ID)
		require.Equal(t, "unknown change type", got.Reason)
		require.Equal(t, ev.Raw, got.Raw)
	})

	open.test(t, "NoPolicyRecordsEveryEvent", nil, func(t *testing.T, b *bundle) {
		for _, kind := range []string{store.KindAddExternalContact, store.KindAddMember, store.KindDelExternalContact} {
			ev := b.saveEvent(t, kind)
			require.Equal(t, store.EventRecorded, ev.State, kind)
		}
		require.Equal(t, store.EventIgnored, b.saveEvent(t, store.KindIgnored).State)
		require.Equal(t, store.Counts{Events: 4}, b.counts(t))
	})

	open.test(t, "ErrInvalid", Policy{}, func(t *testing.T, b *bundle) {
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
			ev := NewEvent(store.KindAddExternalContact)
			mutate(ev)
			inserted, err := b.db.SaveEvent(t.Context(), ev)
			require.ErrorIs(t, err, store.ErrInvalid, name)
			require.False(t, inserted, name)
		}
		_, err := b.db.SaveEvent(t.Context(), nil)
		require.ErrorIs(t, err, store.ErrInvalid)
		require.Equal(t, store.Counts{}, b.counts(t))
	})
}

func (open exerciser) groupCommit(t *testing.T) {
	open.test(t, "CancelledContextWritesNothing", Policy{}, func(t *testing.T, b *bundle) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		ev := NewEvent(store.KindAddExternalContact)
		inserted, err := b.db.SaveEvent(ctx, ev)
		require.ErrorIs(t, err, context.Canceled)
		require.False(t, inserted)
		require.Zero(t, ev.ID)
		require.Equal(t, store.Counts{}, b.counts(t))

		inserted, err = b.db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.True(t, inserted, "the cancelled call left no event behind")
	})

	open.test(t, "ConcurrentExactCounts", Policy{}, func(t *testing.T, b *bundle) {
		// Ensure concurrent callers, half of them repeating a key, are
		// counted exactly: each key stored once with one job, every repeat
		// counted as a duplicate.
		const goroutines, keys = 200, 100
		var inserted atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, goroutines)
		for i := range goroutines {
			wg.Go(func() {
				ev := NewEvent(store.KindAddExternalContact)
				ev.DedupKey = fmt.Sprintf("concurrent-%d", i%keys)
				ev.ExternalUserID = fmt.Sprintf("wmtest-%d", i%keys)
				ok, err := b.db.SaveEvent(t.Context(), ev)
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
		require.Equal(t, store.Counts{Events: keys, Jobs: keys}, b.counts(t))
		subjects := map[string]bool{}
		for _, j := range Jobs(t, b.db) {
			subjects[j.Subject] = true
		}
		require.Len(t, subjects, keys, "one job per key, none lost or doubled")

		st, err := b.db.Status(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(keys), st.EventsReceived)
		require.Equal(t, int64(goroutines-keys), st.EventsDuplicate)
	})

	open.test(t, "ErrClosedAfterClose", Policy{}, func(t *testing.T, b *bundle) {
		require.NoError(t, b.db.Close())
		_, err := b.db.SaveEvent(t.Context(), NewEvent(store.KindAddExternalContact))
		require.ErrorIs(t, err, store.ErrClosed)
		_, err = b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		require.ErrorIs(t, err, store.ErrClosed)
	})
}

// jobPolicy checks that the policy's jobs commit in the write's own
// transaction: with River's Workers set but no worker for Policy's kind,
// every insert of a Policy job fails (UnknownJobKindError), and the write
// must then leave nothing behind.
func (open exerciser) jobPolicy(t *testing.T) {
	// setup opens a store whose job inserts fail.
	setup := func(t *testing.T, policy Policy) *bundle {
		t.Helper()
		return open.setupConfig(t, store.Config{Jobs: policy, Workers: river.NewWorkers()})
	}
	requireUnknownKind := func(t *testing.T, err error) {
		t.Helper()
		var unknown *river.UnknownJobKindError
		require.ErrorAs(t, err, &unknown)
		require.Equal(t, Job{}.Kind(), unknown.Kind)
	}

	t.Run("FailedEventJobsStoreNoEvent", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Policy{})
		ev := NewEvent(store.KindAddExternalContact)
		_, err := b.db.SaveEvent(t.Context(), ev)
		requireUnknownKind(t, err)
		require.Equal(t, store.Counts{}, b.counts(t))
		st, err := b.db.Status(t.Context())
		require.NoError(t, err)
		require.Zero(t, st.EventsReceived)

		// An event without jobs still commits: only the jobs failed.
		b.saveEvent(t, store.KindIgnored)
	})

	t.Run("FailedNotificationJobsLinkNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Policy{Notify: true})
		b.addFan(t, "test-u1", "p-1")
		_, err := b.db.RecordResolution(t.Context(), resolution("wwtestcorp", "wmtest1", "p-1"))
		requireUnknownKind(t, err)
		require.Equal(t, store.Counts{Fans: 1, FanPendingIDs: 1}, b.counts(t), "no resolution, link or outbox row")
	})

	t.Run("FailedPendingIDJobsRecordNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Policy{PendingIDs: true})
		b.addFan(t, "test-u1", "")
		_, err := b.db.RecordFanPendingID(t.Context(), "test-u1", "p-1")
		requireUnknownKind(t, err)
		require.Equal(t, store.Counts{Fans: 1}, b.counts(t))
		require.Equal(t, store.FanNew, b.fan(t, "test-u1").State)
	})
}

func (open exerciser) findEventByID(t *testing.T) {
	open.test(t, "RoundTripsEveryField", Policy{}, func(t *testing.T, b *bundle) {
		ev := NewEvent(store.KindAddMember)
		ev.Reason = "why"
		_, err := b.db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.Equal(t, ev, b.event(t, ev.ID))
	})

	open.test(t, "ErrNotFound", Policy{}, func(t *testing.T, b *bundle) {
		_, err := b.db.FindEventByID(t.Context(), 42)
		require.ErrorIs(t, err, store.ErrNotFound)
		require.ErrorContains(t, err, "event 42")
	})
}

func (open exerciser) updateEventState(t *testing.T) {
	b := open.setup(t, Policy{})
	ev := b.saveEvent(t, store.KindAddExternalContact)

	require.NoError(t, b.db.UpdateEventState(t.Context(), ev.ID, store.EventFailed, "wecom 40003"))
	got := b.event(t, ev.ID)
	require.Equal(t, store.EventFailed, got.State)
	require.Equal(t, "wecom 40003", got.Reason)

	require.ErrorIs(t, b.db.UpdateEventState(t.Context(), ev.ID+1, store.EventResolved, ""), store.ErrNotFound)
	require.ErrorIs(t, b.db.UpdateEventState(t.Context(), ev.ID, "done", ""), store.ErrInvalid)
	require.ErrorIs(t, b.db.UpdateEventState(t.Context(), ev.ID, store.EventFailed, string(make([]byte, store.MaxFieldLen+1))), store.ErrInvalid)
	require.Equal(t, "wecom 40003", b.event(t, ev.ID).Reason, "a rejected update changes nothing")
}

func (open exerciser) pruneEvents(t *testing.T) {
	b := open.setup(t, Policy{})
	oldIgnored := b.saveEvent(t, store.KindIgnored)
	oldPending := b.saveEvent(t, store.KindAddExternalContact)
	b.clock.Advance(40 * 24 * time.Hour)
	recent := b.saveEvent(t, store.KindIgnored)

	n, err := b.db.PruneEvents(t.Context(), b.start.Add(31*24*time.Hour))
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	_, err = b.db.FindEventByID(t.Context(), oldIgnored.ID)
	require.ErrorIs(t, err, store.ErrNotFound)
	for _, ev := range []*store.Event{oldPending, recent} {
		_, err := b.db.FindEventByID(t.Context(), ev.ID)
		require.NoError(t, err, "pending and recent events are kept")
	}
	require.Equal(t, int64(2), b.counts(t).Events)

	st, err := b.db.Status(t.Context())
	require.NoError(t, err)
	require.Equal(t, int64(3), st.EventsReceived, "pruning does not lower counters")
}

func (open exerciser) status(t *testing.T) {
	open.test(t, "Empty", Policy{}, func(t *testing.T, b *bundle) {
		st, err := b.db.Status(t.Context())
		require.NoError(t, err)
		require.Equal(t, store.Status{EventsByType: map[string]int64{}}, st)
		require.Equal(t, store.Counts{}, b.counts(t))
	})

	open.test(t, "CountsByKindDuplicatesAndQueue", Policy{}, func(t *testing.T, b *bundle) {
		add := NewEvent(store.KindAddExternalContact)
		for _, ev := range []*store.Event{
			add,
			NewEvent(store.KindAddExternalContact),
			NewEvent(store.KindAddMember), // two members: two jobs
			NewEvent(store.KindIgnored),   // no job
			NewEvent(store.KindEditExternalContact),
		} {
			_, err := b.db.SaveEvent(t.Context(), ev)
			require.NoError(t, err)
		}
		for range 2 {
			dup := *add
			_, err := b.db.SaveEvent(t.Context(), &dup)
			require.NoError(t, err)
		}

		st, err := b.db.Status(t.Context())
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

	open.test(t, "FinishedJobsLeaveTheQueue", Policy{}, func(t *testing.T, b *bundle) {
		b.saveEvent(t, store.KindAddExternalContact)
		b.saveEvent(t, store.KindAddExternalContact)
		_, err := b.db.River().JobCancel(t.Context(), jobRows(t, b.db)[0].ID)
		require.NoError(t, err)
		st, err := b.db.Status(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(1), st.QueuePending)
		require.Equal(t, int64(1), b.counts(t).Jobs)
	})
}

func (open exerciser) quota(t *testing.T) {
	open.test(t, "AddAccumulatesPerKeyAndBucket", nil, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		require.NoError(t, b.db.AddQuota(ctx, "k", 60, 1))
		require.NoError(t, b.db.AddQuota(ctx, "k", 60, 2))
		require.NoError(t, b.db.AddQuota(ctx, "k", 120, 5))
		require.NoError(t, b.db.AddQuota(ctx, "other", 60, 7))
		require.Equal(t, int64(3), b.counts(t).QuotaCounters)

		got, err := b.db.LoadQuota(ctx, "k", 0)
		require.NoError(t, err)
		require.Equal(t, map[int64]int64{60: 3, 120: 5}, got)

		got, err = b.db.LoadQuota(ctx, "k", 120)
		require.NoError(t, err)
		require.Equal(t, map[int64]int64{120: 5}, got, "since is inclusive")

		got, err = b.db.LoadQuota(ctx, "none", 0)
		require.NoError(t, err)
		require.Empty(t, got)
		require.NotNil(t, got)
	})

	open.test(t, "PruneDropsOldBucketsOfEveryKey", nil, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		require.NoError(t, b.db.AddQuota(ctx, "k", 60, 1))
		require.NoError(t, b.db.AddQuota(ctx, "k", 120, 1))
		require.NoError(t, b.db.AddQuota(ctx, "other", 60, 1))

		n, err := b.db.PruneQuota(ctx, 120)
		require.NoError(t, err)
		require.Equal(t, int64(2), n)
		got, err := b.db.LoadQuota(ctx, "k", 0)
		require.NoError(t, err)
		require.Equal(t, map[int64]int64{120: 1}, got)
		require.Equal(t, int64(1), b.counts(t).QuotaCounters)
	})

	open.test(t, "ErrInvalidKey", nil, func(t *testing.T, b *bundle) {
		require.ErrorIs(t, b.db.AddQuota(t.Context(), "", 60, 1), store.ErrInvalid)
		require.ErrorIs(t, b.db.AddQuota(t.Context(), string(make([]byte, store.MaxFieldLen+1)), 60, 1), store.ErrInvalid)
		require.Zero(t, b.counts(t).QuotaCounters)
	})
}

func (open exerciser) close(t *testing.T) {
	open.test(t, "IsIdempotent", nil, func(t *testing.T, b *bundle) {
		require.NoError(t, b.db.Ping(t.Context()))
		require.NoError(t, b.db.Close())
		require.NoError(t, b.db.Close())
		require.NoError(t, b.db.Start(t.Context()), "Start without workers is a no-op, even closed")
	})
}

// reopen: what one process wrote, the next finds, after Close and Open of
// the same database.
func (open exerciser) reopen(t *testing.T, newDSN func(tb testing.TB) string) {
	t.Run("DataSurvives", func(t *testing.T) {
		t.Parallel()
		dsn := newDSN(t)
		db, err := store.Open(t.Context(), store.Config{DSN: dsn, Jobs: Policy{}})
		require.NoError(t, err)
		ev := NewEvent(store.KindAddExternalContact)
		_, err = db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.NoError(t, db.AddQuota(t.Context(), "api", 60, 3))
		want := MustCounts(t, db)
		require.NoError(t, db.Close())

		db = open(t, store.Config{DSN: dsn})
		require.Equal(t, want, MustCounts(t, db))
		got, err := db.FindEventByID(t.Context(), ev.ID)
		require.NoError(t, err)
		require.Equal(t, ev.DedupKey, got.DedupKey)
		require.Equal(t, ev.Raw, got.Raw, "the raw bytes round-trip")
		q, err := db.LoadQuota(t.Context(), "api", 0)
		require.NoError(t, err)
		require.Equal(t, map[int64]int64{60: 3}, q)
		st, err := db.Status(t.Context())
		require.NoError(t, err)
		require.Equal(t, int64(1), st.EventsReceived)
		require.Equal(t, int64(1), st.QueuePending)

		inserted, err := db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)
		require.False(t, inserted, "a retry after the restart is still a duplicate")
	})
}

func (open exerciser) start(t *testing.T) {
	open.test(t, "InsertOnlyClientInsertsInTx", nil, func(t *testing.T, b *bundle) {
		require.NoError(t, b.db.Start(t.Context()), "no-op without workers")

		tx, err := b.db.SQL().BeginTx(t.Context(), nil)
		require.NoError(t, err)
		_, err = b.db.River().InsertTx(t.Context(), tx, Job{What: "test", Subject: "wmtest"}, nil)
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		require.Equal(t, []Job{{What: "test", Subject: "wmtest"}}, Jobs(t, b.db))
	})

	t.Run("WorkersWorkSavedEvents", func(t *testing.T) {
		t.Parallel()
		workers, worked := RecordingWorkers()
		db := open.setupConfig(t, store.Config{Workers: workers, Jobs: Policy{}}).db
		completed, cancel := db.River().Subscribe(river.EventKindJobCompleted)
		defer cancel()
		require.NoError(t, db.Start(t.Context()))

		ev := NewEvent(store.KindAddExternalContact)
		_, err := db.SaveEvent(t.Context(), ev)
		require.NoError(t, err)

		require.Equal(t, ev.ID, Receive(t, worked, "the event's job was not worked").EventID)
		require.Equal(t, Job{}.Kind(), Receive(t, completed, "the event's job did not complete").Job.Kind)
	})
}
