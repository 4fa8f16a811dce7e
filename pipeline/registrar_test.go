package pipeline_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/internal/fakeclock"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/pipeline/pipelinetest"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
)

// registrarBundle runs a pipeline's registrar on a fake clock: its waits
// move the clock instead of passing time.
type registrarBundle struct {
	*workerBundle
	clock *fakeclock.Clock

	mu    sync.Mutex
	order []string // unionids in the order WeCom was asked
}

func setupRegistrar(t *testing.T, answer func(unionID string, call int) (string, error)) *registrarBundle {
	t.Helper()
	return setupRegistrarWith(t, nil, answer)
}

// setupRegistrarWith is setupRegistrar with a change to the pipeline's
// config.
func setupRegistrarWith(t *testing.T, mutate func(*pipeline.Config), answer func(unionID string, call int) (string, error)) *registrarBundle {
	t.Helper()
	clock := fakeclock.New(testNow)
	b := &registrarBundle{clock: clock}
	calls := map[string]int{}
	b.workerBundle = setupWorkersAt(t, clock.Now, func(c *pipeline.Config) {
		c.Sleep = clock.Sleep
		c.RegisterConcurrency = 1 // one call at a time, so the order is the queue's
		if mutate != nil {
			mutate(c)
		}
	})
	b.wecom.UnionIDToPendingIDFunc = func(_ context.Context, unionID, _ string) (string, error) {
		b.mu.Lock()
		b.order = append(b.order, unionID)
		calls[unionID]++
		n := calls[unionID]
		b.mu.Unlock()
		return answer(unionID, n)
	}
	return b
}

// run runs the registrar until every fan listed is registered or failed.
func (b *registrarBundle) run(t *testing.T, unionIDs ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.pl.RunRegistrar(ctx)
	}()
	defer func() { cancel(); <-done }()
	require.Eventually(t, func() bool {
		for _, u := range unionIDs {
			f, err := b.db.FindFan(t.Context(), u)
			if err != nil || f.State == store.FanNew {
				return false
			}
		}
		return true
	}, 30*time.Second, 5*time.Millisecond)
}

func (b *registrarBundle) asked() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.order...)
}

func (b *registrarBundle) queue(t *testing.T, class int, fans ...store.FanInput) {
	t.Helper()
	_, err := b.db.RegisterFans(t.Context(), fans, store.RegisterOpts{Priority: class})
	require.NoError(t, err)
}

func TestRegistrar_WorksTheQueueInOrder(t *testing.T) {
	t.Parallel()
	b := setupRegistrar(t, func(u string, _ int) (string, error) { return "p-" + u, nil })
	b.queue(t, store.QueueBulk,
		store.FanInput{UnionID: "test-low", OpenID: "o", Priority: 10},
		store.FanInput{UnionID: "test-default", OpenID: "o"},
		store.FanInput{UnionID: "test-high", OpenID: "o", Priority: 90})
	b.queue(t, store.QueueInteractive, store.FanInput{UnionID: "test-interactive", OpenID: "o", Priority: 1})

	b.run(t, "test-low", "test-default", "test-high", "test-interactive")
	require.Equal(t, []string{"test-interactive", "test-high", "test-default", "test-low"}, b.asked(),
		"interactive first, then by the fan's priority")
	for _, u := range []string{"test-low", "test-interactive"} {
		f, err := b.db.FindFan(t.Context(), u)
		require.NoError(t, err)
		require.Equal(t, store.FanRegistered, f.State)
		require.Equal(t, "p-"+u, f.PendingID)
	}
	next, err := b.db.NextFans(t.Context(), 10)
	require.NoError(t, err)
	require.Empty(t, next, "the queue is empty")
}

func TestRegistrar_TransientErrorPutsTheFanBack(t *testing.T) {
	t.Parallel()
	b := setupRegistrar(t, func(u string, call int) (string, error) {
		if u == "test-a" && call == 1 {
			return "", apiError("corpgroup/unionid_to_pending_id", wecom.CodeSystemBusy)
		}
		return "p-" + u, nil
	})
	b.queue(t, store.QueueBulk, store.FanInput{UnionID: "test-a", OpenID: "o"}, store.FanInput{UnionID: "test-b", OpenID: "o"})
	b.clock.Advance(time.Millisecond) // queued before the failure, as they would be
	start := b.clock.Now()
	b.run(t, "test-a", "test-b")
	require.Equal(t, []string{"test-a", "test-b", "test-a"}, b.asked(), "a fan that failed for now goes behind the others, not away")
	a, err := b.db.FindFan(t.Context(), "test-a")
	require.NoError(t, err)
	require.Equal(t, store.FanRegistered, a.State)
	require.GreaterOrEqual(t, b.clock.Now().Sub(start), time.Second, "the registrar backed off before its next call")
}

func TestRegistrar_RefusalFailsTheFan(t *testing.T) {
	t.Parallel()
	b := setupRegistrar(t, func(u string, _ int) (string, error) {
		if u == "test-bad" {
			return "", apiError("corpgroup/unionid_to_pending_id", 610014)
		}
		return "p-" + u, nil
	})
	b.queue(t, store.QueueBulk, store.FanInput{UnionID: "test-bad", OpenID: "o", Priority: 90}, store.FanInput{UnionID: "test-good", OpenID: "o"})
	b.run(t, "test-bad", "test-good")
	require.Equal(t, []string{"test-bad", "test-good"}, b.asked(), "asked once")
	bad, err := b.db.FindFan(t.Context(), "test-bad")
	require.NoError(t, err)
	require.Equal(t, store.FanFailed, bad.State)
}

func TestRegistrar_RateLimitPausesEveryCall(t *testing.T) {
	t.Parallel()
	b := setupRegistrar(t, func(u string, call int) (string, error) {
		if u == "test-a" && call == 1 {
			return "", apiError("corpgroup/unionid_to_pending_id", wecom.CodeAPIFreqOutOfLimit)
		}
		return "p-" + u, nil
	})
	b.queue(t, store.QueueBulk, store.FanInput{UnionID: "test-a", OpenID: "o", Priority: 90}, store.FanInput{UnionID: "test-b", OpenID: "o"})
	start := b.clock.Now()
	b.run(t, "test-a", "test-b")
	require.Equal(t, []string{"test-a", "test-a", "test-b"}, b.asked(), "the fan keeps its place; nothing is called meanwhile")
	require.GreaterOrEqual(t, b.clock.Now().Sub(start), time.Minute, "waited RateLimitDelay")
}

func TestRegistrar_OnePerCluster(t *testing.T) {
	t.Parallel()
	b := setupRegistrar(t, func(u string, _ int) (string, error) { return "p-" + u, nil })
	lease, err := b.db.TryLease(t.Context(), pipeline.RegistrarLease)
	require.NoError(t, err, "another instance is the registrar")
	b.queue(t, store.QueueBulk, store.FanInput{UnionID: "test-a", OpenID: "o"})

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.pl.RunRegistrar(ctx)
	}()
	// The fake clock moves with each of the registrar's waits: once a
	// simulated minute has passed it tried the lease many times.
	require.Eventually(t, func() bool { return b.clock.Now().Sub(testNow) > time.Minute }, 30*time.Second, time.Millisecond)
	require.Empty(t, b.asked(), "no registration without the lease")

	require.NoError(t, lease.Release()) // the other instance went away
	b.run(t, "test-a")
	cancel()
	<-done
	require.Equal(t, []string{"test-a"}, b.asked())
}

func TestRegistrar_WaitsForTheQuota(t *testing.T) {
	t.Parallel()
	frees := testNow.Add(10 * time.Minute)
	var calledAt time.Time
	var b *registrarBundle
	b = setupRegistrarWith(t, func(c *pipeline.Config) {
		c.Quota = &pipelinetest.FakeQuota{Next: frees}
	}, func(u string, _ int) (string, error) {
		calledAt = b.clock.Now()
		return "p-" + u, nil
	})
	b.queue(t, store.QueueBulk, store.FanInput{UnionID: "test-a", OpenID: "o"})
	b.run(t, "test-a")
	require.False(t, calledAt.Before(frees), "no call before the quota allows one (called at %s)", calledAt)
}

// TestRegistrar_NoMoreInFlightThanTheQuotaHasRoom: with room for 2 calls,
// 2 are in flight at most, so the fans at the head of the queue get them.
func TestRegistrar_NoMoreInFlightThanTheQuotaHasRoom(t *testing.T) {
	t.Parallel()
	var (
		mu        sync.Mutex
		now, most int
		release   = make(chan struct{})
	)
	b := setupRegistrarWith(t, func(c *pipeline.Config) {
		c.RegisterConcurrency = 8
		c.Quota = &pipelinetest.FakeQuota{Windows: []quota.Usage{{Length: time.Hour, Limit: 2}}}
	}, func(u string, _ int) (string, error) {
		mu.Lock()
		now++
		most = max(most, now)
		mu.Unlock()
		<-release
		mu.Lock()
		now--
		mu.Unlock()
		return "p-" + u, nil
	})
	var fans []store.FanInput
	for i := range 6 {
		fans = append(fans, store.FanInput{UnionID: fmt.Sprintf("test-%d", i), OpenID: "o"})
	}
	b.queue(t, store.QueueBulk, fans...)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.pl.RunRegistrar(ctx)
	}()
	inFlight := func() int {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	require.Eventually(t, func() bool { return inFlight() == 2 }, 30*time.Second, time.Millisecond)
	// The registrar's waits move the fake clock: once it moved 100 ms the
	// loop has looked at the queue five times while two calls were held.
	t0 := b.clock.Now()
	require.Eventually(t, func() bool { return b.clock.Now().Sub(t0) >= 100*time.Millisecond }, 30*time.Second, time.Millisecond)
	require.Equal(t, 2, inFlight(), "no third call while the quota has room for two")
	close(release)
	cancel()
	<-done
	b.run(t, "test-0", "test-1", "test-2", "test-3", "test-4", "test-5")
	require.Equal(t, 2, most, "in flight at once")
}

// staleRead is the store with a queue read that WeCom's answer for a fan in
// flight overtakes: the read sees the fan still queued, then the fan's
// call completes and commits, and only then does the read return.
type staleRead struct {
	*store.DB
	reads    int
	overtake func() // runs inside the second read, after it read
	recorded chan struct{}
	once     sync.Once
}

// RecordFanPendingID tells the read waiting in overtake that test-a's id is
// committed.
func (s *staleRead) RecordFanPendingID(ctx context.Context, unionID, pendingID string) ([]store.Link, error) {
	links, err := s.DB.RecordFanPendingID(ctx, unionID, pendingID)
	if unionID == "test-a" {
		s.once.Do(func() { close(s.recorded) })
	}
	return links, err
}

func (s *staleRead) NextFans(ctx context.Context, limit int) ([]store.QueuedFan, error) {
	fans, err := s.DB.NextFans(ctx, limit)
	if s.reads++; s.reads == 2 {
		s.overtake()
	}
	return fans, err
}

// TestRegistrar_StaleReadDoesNotAskTwice: a fan whose call finished while
// the registrar read the queue is not taken from that read again (it would
// spend a call, and count as a renewal answered with the same id).
func TestRegistrar_StaleReadDoesNotAskTwice(t *testing.T) {
	t.Parallel()
	for round := range 20 {
		release := make(chan struct{})
		b := setupRegistrarWith(t, func(c *pipeline.Config) {
			c.RegisterConcurrency = 2
			sr := &staleRead{DB: c.Store.(*store.DB), recorded: make(chan struct{})}
			sr.overtake = func() {
				close(release) // test-a's answer arrives…
				<-sr.recorded  // …and is committed before the read returns
			}
			c.Store = sr
		}, func(u string, _ int) (string, error) {
			if u == "test-a" {
				<-release
			}
			return "p-" + u, nil
		})
		b.queue(t, store.QueueBulk, store.FanInput{UnionID: "test-a", OpenID: "o", Priority: 90},
			store.FanInput{UnionID: "test-b", OpenID: "o", Priority: 10})
		b.run(t, "test-a", "test-b")
		require.ElementsMatch(t, []string{"test-a", "test-b"}, b.asked(), "round %d: each fan asked once", round)
	}
}
