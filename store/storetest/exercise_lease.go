package storetest

import (
	"testing"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
)

func (open exerciser) lease(t *testing.T) {
	open.test(t, "HeldOnceUntilReleased", nil, func(t *testing.T, b *bundle) {
		l, err := b.db.TryLease(t.Context(), "x")
		require.NoError(t, err)
		_, err = b.db.TryLease(t.Context(), "x")
		require.ErrorIs(t, err, store.ErrLeaseHeld)
		other, err := b.db.TryLease(t.Context(), "y")
		require.NoError(t, err, "leases are named")
		require.NoError(t, l.Check(t.Context()))

		require.NoError(t, l.Release())
		require.NoError(t, l.Release(), "idempotent")
		require.Error(t, l.Check(t.Context()), "a released lease is not held")
		again, err := b.db.TryLease(t.Context(), "x")
		require.NoError(t, err, "free again once released")
		require.NoError(t, again.Release())
		require.NoError(t, other.Release())
	})

	t.Run("LeasedQueueMustBeAQueue", func(t *testing.T) {
		t.Parallel()
		cfg := store.Config{Workers: river.NewWorkers(), LeasedQueues: []string{"missing"}}
		cfg.DSN = t.TempDir() + "/unused.db" // Open fails before it touches the database
		_, err := store.Open(t.Context(), cfg)
		require.ErrorContains(t, err, `"missing" is not in Config.Queues`)
	})

	t.Run("LeasedQueueWithinRiversWorkerLimit", func(t *testing.T) {
		// River checks a queue's workers when it is added, which for a
		// leased queue is at run time, where the error would only be
		// logged and the queue never worked: Open refuses it instead.
		t.Parallel()
		for _, n := range []int{0, river.QueueNumWorkersMax + 1} {
			cfg := store.Config{Workers: river.NewWorkers(), LeasedQueues: []string{"leased"},
				Queues: map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 1}, "leased": {MaxWorkers: n}}}
			cfg.DSN = t.TempDir() + "/unused.db" // Open fails before it touches the database
			_, err := store.Open(t.Context(), cfg)
			require.ErrorContains(t, err, `Config.Queues["leased"].MaxWorkers must be from 1 to 10000`, n)
		}
	})

	t.Run("LeasedQueueIsWorked", func(t *testing.T) {
		t.Parallel()
		workers, worked := RecordingWorkers()
		db := open.setupConfig(t, store.Config{
			Workers:      workers,
			Queues:       map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 1}, "leased": {MaxWorkers: 1}},
			LeasedQueues: []string{"leased"},
		}).db
		require.NoError(t, db.Start(t.Context()))
		_, err := db.TryLease(t.Context(), "queue leased")
		require.ErrorIs(t, err, store.ErrLeaseHeld, "the only instance holds its queue's lease from Start")

		_, err = db.River().Insert(t.Context(), Job{What: "test", Subject: "leased"}, &river.InsertOpts{Queue: "leased"})
		require.NoError(t, err)
		require.Equal(t, "leased", Receive(t, worked, "the leased queue's job was not worked").Subject)
		require.NoError(t, db.Close())
		_, err = db.TryLease(t.Context(), "queue leased")
		require.ErrorIs(t, err, store.ErrClosed)
	})
}
