package pipeline

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom"
)

var _ PendingResolver = (*wecom.Client)(nil)

// resolverCall is one call the fake resolver received.
type resolverCall struct {
	corpID, chatID string
	ids            []string
	ctx            context.Context
}

// fakeResolver records calls. By default it answers "p-"+id for every id;
// Fn replaces that.
type fakeResolver struct {
	Fn func(ctx context.Context, corpID, chatID string, ids []string) ([]wecom.PendingResult, error)

	mu    sync.Mutex
	calls []resolverCall
}

func (f *fakeResolver) ExternalUserIDToPendingID(ctx context.Context, corpID, chatID string, ids []string) ([]wecom.PendingResult, error) {
	f.mu.Lock()
	f.calls = append(f.calls, resolverCall{corpID: corpID, chatID: chatID, ids: slices.Clone(ids), ctx: ctx})
	f.mu.Unlock()
	if f.Fn != nil {
		return f.Fn(ctx, corpID, chatID, ids)
	}
	return answerAll(ids), nil
}

// Calls returns a copy of the calls so far.
func (f *fakeResolver) Calls() []resolverCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func answerAll(ids []string) []wecom.PendingResult {
	out := make([]wecom.PendingResult, len(ids))
	for i, id := range ids {
		out[i] = wecom.PendingResult{ExternalUserID: id, PendingID: "p-" + id}
	}
	return out
}

// manualTimers replaces time.AfterFunc so a test decides when Window ends.
type manualTimers struct {
	mu     sync.Mutex
	timers []*manualTimer
}

type manualTimer struct {
	d              time.Duration
	f              func()
	fired, stopped bool
}

func (m *manualTimers) afterFunc(d time.Duration, f func()) func() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := &manualTimer{d: d, f: f}
	m.timers = append(m.timers, t)
	return func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		if t.fired || t.stopped {
			return false
		}
		t.stopped = true
		return true
	}
}

// Pending returns the durations of timers neither fired nor stopped.
func (m *manualTimers) Pending() []time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []time.Duration
	for _, t := range m.timers {
		if !t.fired && !t.stopped {
			out = append(out, t.d)
		}
	}
	return out
}

// FireAll fires every pending timer, like time passing, and returns how many fired.
func (m *manualTimers) FireAll() int {
	m.mu.Lock()
	var due []func()
	for _, t := range m.timers {
		if !t.fired && !t.stopped {
			t.fired = true
			due = append(due, t.f)
		}
	}
	m.mu.Unlock()
	for _, f := range due {
		f()
	}
	return len(due)
}

type coalescerBundle struct {
	c        *Coalescer
	resolver *fakeResolver
	timers   *manualTimers
}

// setupCoalescer returns a Coalescer with manual timers (nothing flushes by
// time unless the test fires it) and closes it at cleanup.
func setupCoalescer(tb testing.TB, r *fakeResolver, cfg CoalescerConfig) *coalescerBundle {
	tb.Helper()
	if r == nil {
		r = &fakeResolver{}
	}
	c, err := NewCoalescer(r, cfg)
	require.NoError(tb, err)
	mt := &manualTimers{}
	c.afterFunc = mt.afterFunc
	tb.Cleanup(c.Close)
	return &coalescerBundle{c: c, resolver: r, timers: mt}
}

type answer struct {
	pendingID string
	err       error
}

// resolveAsync starts Resolve in a goroutine; the answer arrives on the channel.
func resolveAsync(ctx context.Context, c *Coalescer, corpID, chatID, id string) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		p, err := c.Resolve(ctx, corpID, chatID, id)
		ch <- answer{p, err}
	}()
	return ch
}

// resolveOnRealTimers asks for one id with the Coalescer's own timers (not
// manual ones) and returns how long that took; inside a synctest bubble the
// clock is fake, so the duration is exact. The id must be answered by a
// single call.
func resolveOnRealTimers(t *testing.T, cfg CoalescerConfig) time.Duration {
	t.Helper()
	r := &fakeResolver{}
	c, err := NewCoalescer(r, cfg)
	require.NoError(t, err)
	defer c.Close()

	start := time.Now()
	p, err := c.Resolve(t.Context(), "wwcorp", "", "wmA")
	require.NoError(t, err)
	require.Equal(t, "p-wmA", p)
	elapsed := time.Since(start)
	require.Len(t, r.Calls(), 1)
	return elapsed
}

// syncTest runs fn as a parallel subtest inside a synctest bubble, where
// the coalescer's goroutines can be waited for.
func syncTest(t *testing.T, name string, fn func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, fn)
	})
}

// startInFlight asks for wmA and fires its group's timer; the resolver holds
// that call in flight until release is closed.
func startInFlight(t *testing.T) (b *coalescerBundle, a <-chan answer, release chan struct{}) {
	t.Helper()
	release = make(chan struct{})
	r := &fakeResolver{Fn: func(_ context.Context, _, _ string, ids []string) ([]wecom.PendingResult, error) {
		<-release
		return answerAll(ids), nil
	}}
	b = setupCoalescer(t, r, CoalescerConfig{})
	a = resolveAsync(t.Context(), b.c, "wwcorp", "", "wmA")
	synctest.Wait()
	b.timers.FireAll()
	synctest.Wait() // the call is in flight, blocked on release
	return b, a, release
}

func idsN(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return ids
}

func TestNewCoalescer(t *testing.T) {
	t.Parallel()

	t.Run("DefaultsApplied", func(t *testing.T) {
		t.Parallel()
		c, err := NewCoalescer(&fakeResolver{}, CoalescerConfig{})
		require.NoError(t, err)
		require.Equal(t, 50*time.Millisecond, c.cfg.Window)
		require.Equal(t, 100, c.cfg.MaxBatch)
		require.Equal(t, 30*time.Second, c.cfg.CallTimeout)
		c.Close()
	})

	t.Run("ErrMaxBatchOver100", func(t *testing.T) {
		t.Parallel()
		_, err := NewCoalescer(&fakeResolver{}, CoalescerConfig{MaxBatch: 101})
		require.ErrorContains(t, err, "MaxBatch")
	})

	t.Run("ErrNegativeWindow", func(t *testing.T) {
		t.Parallel()
		_, err := NewCoalescer(&fakeResolver{}, CoalescerConfig{Window: -time.Second})
		require.ErrorContains(t, err, "Window")
	})

	t.Run("ErrNilResolver", func(t *testing.T) {
		t.Parallel()
		_, err := NewCoalescer(nil, CoalescerConfig{})
		require.ErrorContains(t, err, "resolver is nil")
	})
}

func TestCoalescer_Resolve(t *testing.T) {
	t.Parallel()

	t.Run("FullGroupFlushesAtOnce", func(t *testing.T) {
		t.Parallel()
		// In a bubble, a broken full-flush would still end (the 1 h timer
		// fires in fake time) and fail the FlushedByTimer check below
		// instead of hanging the test.
		synctest.Test(t, func(t *testing.T) {
			r := &fakeResolver{}
			c, err := NewCoalescer(r, CoalescerConfig{Window: time.Hour})
			require.NoError(t, err)
			defer c.Close()

			ids := idsN("wm", 100)
			got := make([]answer, len(ids))
			var wg sync.WaitGroup
			for i, id := range ids {
				wg.Go(func() {
					p, err := c.Resolve(context.Background(), "wwcorp", "", id)
					got[i] = answer{p, err}
				})
			}
			wg.Wait()

			calls := r.Calls()
			require.Len(t, calls, 1)
			require.ElementsMatch(t, ids, calls[0].ids)
			for i, id := range ids {
				require.Equal(t, answer{"p-" + id, nil}, got[i])
			}
			st := c.Stats()
			require.Equal(t, int64(1), st.FlushedFull)
			require.Equal(t, int64(0), st.FlushedByTimer)
		})
	})

	syncTest(t, "TimerFlushesPartialGroup", func(t *testing.T) {
		b := setupCoalescer(t, nil, CoalescerConfig{Window: 50 * time.Millisecond})
		a := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmA")
		bb := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmB")
		synctest.Wait() // both asks joined and are waiting

		require.Empty(t, b.resolver.Calls(), "no call before the window ends")
		require.Equal(t, []time.Duration{50 * time.Millisecond}, b.timers.Pending(), "one timer, started by the first ask")

		require.Equal(t, 1, b.timers.FireAll())
		require.Equal(t, answer{"p-wmA", nil}, <-a)
		require.Equal(t, answer{"p-wmB", nil}, <-bb)

		calls := b.resolver.Calls()
		require.Len(t, calls, 1)
		require.Equal(t, []string{"wmA", "wmB"}, sortedIDs(calls[0]))
		require.Equal(t, int64(1), b.c.Stats().FlushedByTimer)
	})

	t.Run("BacklogKeepsPartialGroupOpen", func(t *testing.T) {
		t.Parallel()
		// Ensure a partial group waits another Window while Backlog reports
		// more work queued, and is sent once it does not.
		synctest.Test(t, func(t *testing.T) {
			var backlog atomic.Bool
			backlog.Store(true)
			b := setupCoalescer(t, nil, CoalescerConfig{Window: 50 * time.Millisecond, Backlog: backlog.Load})
			a := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmA")
			synctest.Wait()

			require.Equal(t, 1, b.timers.FireAll())
			synctest.Wait()
			require.Empty(t, b.resolver.Calls(), "backlog: the group waits")
			require.Equal(t, []time.Duration{50 * time.Millisecond}, b.timers.Pending(), "re-armed for another Window")

			backlog.Store(false)
			require.Equal(t, 1, b.timers.FireAll())
			require.Equal(t, answer{"p-wmA", nil}, <-a)
			require.Len(t, b.resolver.Calls(), 1)
		})
	})

	t.Run("MaxWaitBoundsBacklogWait", func(t *testing.T) {
		t.Parallel()
		// Ensure a group is sent after MaxWait even while Backlog keeps saying
		// more is coming (real timers on the bubble's exact clock).
		synctest.Test(t, func(t *testing.T) {
			elapsed := resolveOnRealTimers(t, CoalescerConfig{Window: 50 * time.Millisecond, MaxWait: 150 * time.Millisecond,
				Backlog: func() bool { return true }})
			require.Equal(t, 150*time.Millisecond, elapsed)
		})
	})

	t.Run("DefaultTimerFlushesAfterWindow", func(t *testing.T) {
		t.Parallel()
		// The real time.AfterFunc, on the bubble's fake clock: time only
		// moves when every goroutine is blocked, so the elapsed time is exact.
		synctest.Test(t, func(t *testing.T) {
			elapsed := resolveOnRealTimers(t, CoalescerConfig{Window: 75 * time.Millisecond})
			require.Equal(t, 75*time.Millisecond, elapsed)
		})
	})

	syncTest(t, "GroupsByCorpAndChat", func(t *testing.T) {
		b := setupCoalescer(t, nil, CoalescerConfig{})
		groups := []groupKey{{"wwcorpA", ""}, {"wwcorpA", "wrchat1"}, {"wwcorpB", ""}, {"wwcorpB", "wrchat1"}}
		var answers []<-chan answer
		for _, g := range groups {
			// The same id in every group must still go once per group.
			answers = append(answers,
				resolveAsync(t.Context(), b.c, g.corpID, g.chatID, "wmShared"),
				resolveAsync(t.Context(), b.c, g.corpID, g.chatID, "wmOnly-"+g.corpID+g.chatID))
		}
		synctest.Wait()
		require.Equal(t, len(groups), b.timers.FireAll(), "one timer per group")
		for _, a := range answers {
			require.NoError(t, (<-a).err)
		}

		calls := b.resolver.Calls()
		require.Len(t, calls, len(groups))
		var keys []groupKey
		for _, call := range calls {
			keys = append(keys, groupKey{call.corpID, call.chatID})
			require.Equal(t, []string{"wmOnly-" + call.corpID + call.chatID, "wmShared"}, sortedIDs(call))
		}
		require.ElementsMatch(t, groups, keys)
	})

	syncTest(t, "DuplicateIDSentOnce", func(t *testing.T) {
		b := setupCoalescer(t, nil, CoalescerConfig{})
		var dups []<-chan answer
		for range 5 {
			dups = append(dups, resolveAsync(t.Context(), b.c, "wwcorp", "", "wmDup"))
		}
		other := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmOther")
		synctest.Wait()
		b.timers.FireAll()

		for _, a := range dups {
			require.Equal(t, answer{"p-wmDup", nil}, <-a)
		}
		require.Equal(t, answer{"p-wmOther", nil}, <-other)
		calls := b.resolver.Calls()
		require.Len(t, calls, 1)
		require.Equal(t, []string{"wmDup", "wmOther"}, sortedIDs(calls[0]))
		st := b.c.Stats()
		require.Equal(t, int64(6), st.Asks)
		require.Equal(t, int64(2), st.IDs)
	})

	syncTest(t, "DuplicateCountsOnceTowardsMaxBatch", func(t *testing.T) {
		b := setupCoalescer(t, nil, CoalescerConfig{MaxBatch: 2})
		first := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmA")
		again := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmA")
		synctest.Wait()
		require.Empty(t, b.resolver.Calls(), "one distinct id does not fill a batch of 2")

		second := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmB")
		require.Equal(t, answer{"p-wmA", nil}, <-first)
		require.Equal(t, answer{"p-wmA", nil}, <-again)
		require.Equal(t, answer{"p-wmB", nil}, <-second)
		require.Equal(t, int64(1), b.c.Stats().FlushedFull)
	})

	syncTest(t, "DuplicateOfInFlightIDJoinsCall", func(t *testing.T) {
		b, first, release := startInFlight(t)

		again := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmA")
		synctest.Wait()
		require.Empty(t, b.timers.Pending(), "the in-flight id opened no new group")
		close(release)
		require.Equal(t, answer{"p-wmA", nil}, <-first)
		require.Equal(t, answer{"p-wmA", nil}, <-again)
		require.Len(t, b.resolver.Calls(), 1)
	})

	syncTest(t, "MissingOrEmptyResultIsNoPendingID", func(t *testing.T) {
		r := &fakeResolver{Fn: func(context.Context, string, string, []string) ([]wecom.PendingResult, error) {
			return []wecom.PendingResult{
				{ExternalUserID: "wmHas", PendingID: "pHas"},
				{ExternalUserID: "wmEmpty", PendingID: ""},
				{ExternalUserID: "wmNotAsked", PendingID: "pNotAsked"},
				// wmMissing is not in the result at all.
			}, nil
		}}
		b := setupCoalescer(t, r, CoalescerConfig{})
		has := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmHas")
		empty := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmEmpty")
		missing := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmMissing")
		synctest.Wait()
		b.timers.FireAll()

		require.Equal(t, answer{"pHas", nil}, <-has)
		require.Equal(t, answer{"", nil}, <-empty)
		require.Equal(t, answer{"", nil}, <-missing)
	})

	syncTest(t, "ErrorGoesToEveryCaller", func(t *testing.T) {
		apiErr := &wecom.APIError{API: "corpgroup/batch/external_userid_to_pending_id", Code: wecom.CodeAPIFreqOutOfLimit, Msg: "api freq out of limit"}
		r := &fakeResolver{Fn: func(context.Context, string, string, []string) ([]wecom.PendingResult, error) {
			return nil, fmt.Errorf("resolve batch: %w", apiErr)
		}}
		b := setupCoalescer(t, r, CoalescerConfig{})
		var answers []<-chan answer
		for _, id := range []string{"wmA", "wmB", "wmA"} {
			answers = append(answers, resolveAsync(t.Context(), b.c, "wwcorp", "", id))
		}
		synctest.Wait()
		b.timers.FireAll()

		for _, a := range answers {
			got := <-a
			require.Empty(t, got.pendingID)
			require.ErrorIs(t, got.err, apiErr)
			var ae *wecom.APIError
			require.ErrorAs(t, got.err, &ae)
			require.Equal(t, wecom.CodeAPIFreqOutOfLimit, ae.Code)
			require.True(t, wecom.IsRateLimited(got.err))
		}
		require.Equal(t, int64(1), b.c.Stats().CallErrors)
	})

	syncTest(t, "ResolverPanicBecomesError", func(t *testing.T) {
		r := &fakeResolver{Fn: func(context.Context, string, string, []string) ([]wecom.PendingResult, error) {
			panic("boom")
		}}
		b := setupCoalescer(t, r, CoalescerConfig{})
		a := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmA")
		synctest.Wait()
		b.timers.FireAll()
		require.ErrorContains(t, (<-a).err, "resolver panicked: boom")
	})

	syncTest(t, "CallerCancelDoesNotCancelBatch", func(t *testing.T) {
		entered := make(chan struct{})
		release := make(chan struct{})
		r := &fakeResolver{Fn: func(ctx context.Context, _, _ string, ids []string) ([]wecom.PendingResult, error) {
			close(entered)
			<-release
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return answerAll(ids), nil
		}}
		b := setupCoalescer(t, r, CoalescerConfig{CallTimeout: time.Minute})
		ctx, cancel := context.WithCancel(t.Context())
		quitter := resolveAsync(ctx, b.c, "wwcorp", "", "wmA")
		stayer := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmA")
		other := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmB")
		synctest.Wait()
		b.timers.FireAll()
		<-entered

		cancel()
		require.Equal(t, answer{"", context.Canceled}, <-quitter)
		calls := r.Calls()
		require.Len(t, calls, 1)
		require.NoError(t, calls[0].ctx.Err(), "the call's context is detached from the caller's")
		deadline, ok := calls[0].ctx.Deadline()
		require.True(t, ok)
		require.Equal(t, time.Minute, time.Until(deadline), "CallTimeout bounds the call")

		close(release)
		require.Equal(t, answer{"p-wmA", nil}, <-stayer)
		require.Equal(t, answer{"p-wmB", nil}, <-other)
	})

	t.Run("DoneContextFailsWithoutAsking", func(t *testing.T) {
		t.Parallel()
		b := setupCoalescer(t, nil, CoalescerConfig{})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := b.c.Resolve(ctx, "wwcorp", "", "wmA")
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, int64(0), b.c.Stats().Asks)
	})

	t.Run("ErrEmptyID", func(t *testing.T) {
		t.Parallel()
		b := setupCoalescer(t, nil, CoalescerConfig{})
		_, err := b.c.Resolve(t.Context(), "wwcorp", "", "")
		require.ErrorIs(t, err, wecom.ErrInvalidArgument)
		require.True(t, wecom.IsPermanent(err))
	})

	syncTest(t, "MoreThanMaxBatchSplitsIntoCalls", func(t *testing.T) {
		b := setupCoalescer(t, nil, CoalescerConfig{})
		ids := idsN("wm", 250)
		answers := make([]<-chan answer, len(ids))
		for i, id := range ids {
			answers[i] = resolveAsync(t.Context(), b.c, "wwcorp", "wrchat", id)
		}
		synctest.Wait() // all 250 joined; two full groups already went out

		require.Len(t, b.resolver.Calls(), 2)
		require.Len(t, b.timers.Pending(), 1, "only the partial group still waits")
		require.Equal(t, 1, b.timers.FireAll())
		for i, a := range answers {
			require.Equal(t, answer{"p-" + ids[i], nil}, <-a)
		}

		calls := b.resolver.Calls()
		require.Len(t, calls, 3)
		var sizes []int
		var sent []string
		for _, call := range calls {
			sizes = append(sizes, len(call.ids))
			sent = append(sent, call.ids...)
		}
		require.Equal(t, []int{100, 100, 50}, sizes)
		require.ElementsMatch(t, ids, sent, "every id sent exactly once")
		st := b.c.Stats()
		require.Equal(t, int64(2), st.FlushedFull)
		require.Equal(t, int64(1), st.FlushedByTimer)
		require.Equal(t, int64(250), st.IDs)
	})

	syncTest(t, "NewAsksStartNewGroupWhileCallInFlight", func(t *testing.T) {
		b, a, release := startInFlight(t)

		bb := resolveAsync(t.Context(), b.c, "wwcorp", "", "wmB")
		synctest.Wait()
		require.Equal(t, 1, b.timers.FireAll(), "wmB opened a group of its own")
		synctest.Wait()
		close(release)
		require.Equal(t, answer{"p-wmA", nil}, <-a)
		require.Equal(t, answer{"p-wmB", nil}, <-bb)
		calls := b.resolver.Calls()
		require.Len(t, calls, 2)
		require.Equal(t, []string{"wmA"}, calls[0].ids)
		require.Equal(t, []string{"wmB"}, calls[1].ids)
	})
}

func TestCoalescer_Close(t *testing.T) {
	t.Parallel()

	syncTest(t, "CloseFlushesPending", func(t *testing.T) {
		b := setupCoalescer(t, nil, CoalescerConfig{Window: time.Hour})
		x := resolveAsync(t.Context(), b.c, "wwcorpA", "", "wmA")
		y := resolveAsync(t.Context(), b.c, "wwcorpB", "", "wmB")
		synctest.Wait()
		require.Empty(t, b.resolver.Calls())

		b.c.Close()
		require.Equal(t, answer{"p-wmA", nil}, <-x)
		require.Equal(t, answer{"p-wmB", nil}, <-y)
		require.Len(t, b.resolver.Calls(), 2)
		require.Empty(t, b.timers.Pending(), "Close stopped the window timers")
		require.Equal(t, int64(2), b.c.Stats().FlushedOnClose)
	})

	syncTest(t, "CloseWaitsForCallsInFlight", func(t *testing.T) {
		b, a, release := startInFlight(t)

		closed := make(chan struct{})
		go func() {
			b.c.Close()
			close(closed)
		}()
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("Close returned while a call was in flight")
		default:
		}
		close(release)
		<-closed
		require.Equal(t, answer{"p-wmA", nil}, <-a)
	})

	t.Run("ResolveAfterCloseFails", func(t *testing.T) {
		t.Parallel()
		b := setupCoalescer(t, nil, CoalescerConfig{})
		b.c.Close()
		b.c.Close() // a second Close is harmless
		_, err := b.c.Resolve(t.Context(), "wwcorp", "", "wmA")
		require.ErrorIs(t, err, ErrCoalescerClosed)
		require.Empty(t, b.resolver.Calls())
	})
}

// TestCoalescer_Concurrent runs on the real scheduler and clock for the race
// detector. Which asks share a call depends on timing, so it checks only what
// must hold for every interleaving.
func TestCoalescer_Concurrent(t *testing.T) {
	t.Parallel()

	t.Run("ManyGoroutinesManyGroups", func(t *testing.T) {
		t.Parallel()
		r := &fakeResolver{}
		c, err := NewCoalescer(r, CoalescerConfig{Window: time.Millisecond, MaxBatch: 7})
		require.NoError(t, err)

		const asks = 2000
		want := make([]answer, asks)
		got := make([]answer, asks)
		var wg sync.WaitGroup
		for i := range asks {
			corp := fmt.Sprintf("wwcorp%d", i%3)
			chat := []string{"", "wrchat"}[i%2]
			id := fmt.Sprintf("wm%d", i%500) // duplicates within and across groups
			want[i] = answer{"p-" + id, nil}
			wg.Go(func() {
				p, err := c.Resolve(context.Background(), corp, chat, id)
				got[i] = answer{p, err}
				_ = c.Stats() // races with the writers under -race
			})
		}
		wg.Wait()
		c.Close()
		require.Equal(t, want, got)

		var sent int64
		for _, call := range r.Calls() {
			require.LessOrEqual(t, len(call.ids), 7)
			require.Len(t, call.ids, len(sortedIDs(call)), "no id twice in one call")
			sent += int64(len(call.ids))
		}
		st := c.Stats()
		require.Equal(t, int64(asks), st.Asks)
		require.Equal(t, int64(len(r.Calls())), st.Calls)
		require.Equal(t, sent, st.IDs)
		require.Equal(t, st.Calls, st.FlushedFull+st.FlushedByTimer+st.FlushedOnClose)
	})

	t.Run("CloseRacesWithResolve", func(t *testing.T) {
		t.Parallel()
		r := &fakeResolver{}
		c, err := NewCoalescer(r, CoalescerConfig{Window: time.Hour})
		require.NoError(t, err)

		const asks = 500
		got := make([]answer, asks)
		var wg sync.WaitGroup
		for i := range asks {
			wg.Go(func() {
				p, err := c.Resolve(context.Background(), "wwcorp", "", fmt.Sprintf("wm%d", i))
				got[i] = answer{p, err}
			})
		}
		c.Close()
		wg.Wait() // with a 1 h window, only Close can have answered the stragglers
		var answered int64
		for i, a := range got {
			if a.err != nil {
				require.ErrorIs(t, a.err, ErrCoalescerClosed)
				continue
			}
			require.Equal(t, fmt.Sprintf("p-wm%d", i), a.pendingID)
			answered++
		}
		st := c.Stats()
		require.Equal(t, answered, st.Asks, "every accepted ask got its answer")
		require.Equal(t, st.Calls, st.FlushedFull+st.FlushedOnClose)
	})
}

// sortedIDs returns the call's ids sorted and deduplicated.
func sortedIDs(c resolverCall) []string {
	ids := slices.Clone(c.ids)
	slices.Sort(ids)
	return slices.Compact(ids)
}
