package store_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

// BenchmarkSaveEvent measures SaveEvent: every call stores a new
// add_external_contact event and its job (storetest.Policy), durably
// (synchronous=FULL). It reports events/s and the p50/p99 latency of one
// call.
//
// ClosedN runs N concurrent callers per GOMAXPROCS, each saving as fast as it
// can: the throughput ceiling. OpenRateN offers N events/s whatever the
// latency, as WeCom does: the latency an HTTP handler sees at that load.
// Worked also works the jobs meanwhile, as a real process does; jobs-left
// is how many were still unfinished at the end.
func BenchmarkSaveEvent(b *testing.B) {
	for _, parallelism := range []int{1, 8, 32, 128} {
		b.Run("Closed"+strconv.Itoa(parallelism), func(b *testing.B) {
			benchClosed(b, storetest.MustOpen, parallelism)
		})
	}

	for _, bc := range []struct {
		rate   int
		worked bool
	}{{3000, false}, {6000, false}, {3000, true}} {
		name := "OpenRate" + strconv.Itoa(bc.rate)
		if bc.worked {
			name += "Worked"
		}
		b.Run(name, func(b *testing.B) {
			cfg := store.Config{Jobs: storetest.Policy{}}
			if bc.worked {
				// River works the jobs on the same write connection
				// meanwhile, with a no-op worker and the default queue.
				cfg.Workers = river.NewWorkers()
				river.AddWorker(cfg.Workers, river.WorkFunc(func(context.Context, *river.Job[storetest.Job]) error { return nil }))
			}
			db := storetest.MustOpen(b, cfg)
			if bc.worked {
				if err := db.Start(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
			rate := bc.rate
			interval := time.Second / time.Duration(rate)
			latencies := make([]time.Duration, b.N)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
					time.Sleep(d) // pacing the offered load, not synchronisation
				}
				wg.Go(func() {
					t0 := time.Now()
					if _, err := db.SaveEvent(b.Context(), benchEvent(int64(i))); err != nil {
						b.Error(err)
					}
					latencies[i] = time.Since(t0)
				})
			}
			wg.Wait()
			reportLatency(b, latencies)
			if st, err := db.Status(b.Context()); err == nil {
				b.ReportMetric(float64(st.QueuePending), "jobs-left")
			}
		})
	}
}

// BenchmarkSaveEventPostgres is BenchmarkSaveEvent's ClosedN on
// PostgreSQL (PENDINGLINK_TEST_POSTGRES), one instance.
func BenchmarkSaveEventPostgres(b *testing.B) {
	storetest.SkipWithoutPostgres(b)
	for _, parallelism := range []int{1, 8, 32, 128} {
		b.Run("Closed"+strconv.Itoa(parallelism), func(b *testing.B) {
			benchClosed(b, storetest.MustOpenPostgres, parallelism)
		})
	}
}

// benchClosed runs parallelism concurrent callers per GOMAXPROCS on a store
// that open gives, each saving as fast as it can.
func benchClosed(b *testing.B, open func(testing.TB, store.Config) *store.DB, parallelism int) {
	db := open(b, store.Config{Jobs: storetest.Policy{}})
	var (
		seq       atomic.Int64
		mu        sync.Mutex
		latencies []time.Duration
	)
	b.SetParallelism(parallelism)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			ev := benchEvent(seq.Add(1))
			start := time.Now()
			if _, err := db.SaveEvent(b.Context(), ev); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(start))
		}
		mu.Lock()
		latencies = append(latencies, mine...)
		mu.Unlock()
	})
	reportLatency(b, latencies)
}

func benchEvent(n int64) *store.Event {
	ev := storetest.NewEvent(store.KindAddExternalContact)
	ev.DedupKey = "bench-" + strconv.FormatInt(n, 10)
	// About the size of a real add_external_contact callback.
	ev.Raw = make([]byte, 600)
	return ev
}

func reportLatency(b *testing.B, latencies []time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if len(latencies) == 0 {
		return
	}
	slices.Sort(latencies)
	at := func(q float64) float64 {
		return float64(latencies[int(q*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op") // per-op time means little for concurrent callers
}

// BenchmarkRegisterFans measures queueing a bulk import: RegisterFans with
// batches of 1,000 new fans, each put in the registration queue (the fans
// table). It reports fans queued per second.
func BenchmarkRegisterFans(b *testing.B) {
	for _, engine := range storetest.Engines() {
		b.Run(engine.Name, func(b *testing.B) { benchRegister(b, engine.Open) })
	}
}

func benchRegister(b *testing.B, open func(testing.TB, store.Config) *store.DB) {
	db := open(b, store.Config{Jobs: storetest.Policy{}})
	const batch = 1000
	fans := make([]store.FanInput, batch)
	n := 0
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		for i := range fans {
			n++
			fans[i] = store.FanInput{UnionID: "bench-u" + strconv.Itoa(n), OpenID: "bench-o" + strconv.Itoa(n)}
		}
		res, err := db.RegisterFans(b.Context(), fans, store.RegisterOpts{Priority: 3})
		if err != nil {
			b.Fatal(err)
		}
		if res.Queued != batch {
			b.Fatalf("queued %d of %d", res.Queued, batch)
		}
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "fans/s")
}

// BenchmarkStatusCounts measures what /v1/status and /v1/quota read from
// the store (PipelineStatus, Backlog, CountFansExpiring, ExpiringByPriority)
// with PENDINGLINK_BENCH_FANS registered fans (default 100,000;
// BENCHMARKS.md has 10,000,000), their pending_ids spread over the last 90
// days, and a tenth as many queued. Recount does the same with CheckTallies, which
// counts every set afresh as the status did before migration 009.
func BenchmarkStatusCounts(b *testing.B) {
	fans := storetest.BenchFans(b, 100_000)
	run := func(b *testing.B, open func(testing.TB, store.Config) *store.DB) {
		now := time.Now()
		db := open(b, store.Config{Jobs: storetest.Policy{}, Now: func() time.Time { return now }})
		storetest.SeedFans(b, db, fans, fans/10, now)
		b.Run("Tallies", func(b *testing.B) {
			for b.Loop() {
				st, err := db.PipelineStatus(b.Context(), 7*24*time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				if st.FansRegistered != int64(fans) || st.FansValid != int64(fans) {
					b.Fatalf("status counts %d registered, %d valid; seeded %d", st.FansRegistered, st.FansValid, fans)
				}
				if _, err := db.Backlog(b.Context(), time.Time{}); err != nil {
					b.Fatal(err)
				}
				if _, err := db.CountFansExpiring(b.Context(), 24*time.Hour); err != nil {
					b.Fatal(err)
				}
				if _, err := db.ExpiringByPriority(b.Context(), 7*24*time.Hour); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("Recount", func(b *testing.B) {
			for b.Loop() {
				drift, err := db.CheckTallies(b.Context())
				if err != nil || len(drift) > 0 {
					b.Fatal(err, drift)
				}
			}
		})
	}
	for _, engine := range storetest.Engines() {
		b.Run(engine.Name, func(b *testing.B) { run(b, engine.Open) })
	}
}

// BenchmarkFansToCheck measures what a reconcile run reads (NextFansToCheck,
// 100 fans) and what the status reads of a sweep (LatestSweep), with
// PENDINGLINK_BENCH_FANS registered fans (default 100,000): Sweep while a
// sweep of all of them runs, New with a tenth of them never checked.
func BenchmarkFansToCheck(b *testing.B) {
	fans := storetest.BenchFans(b, 100_000)
	for _, engine := range storetest.Engines() {
		b.Run(engine.Name, func(b *testing.B) {
			now := time.Now()
			db := engine.Open(b, store.Config{Jobs: storetest.Policy{}, Now: func() time.Time { return now }})
			storetest.SeedFans(b, db, fans, 0, now)
			b.Run("New", func(b *testing.B) {
				if _, err := db.SQL().ExecContext(b.Context(), `UPDATE fans SET checked_at = NULL WHERE importance < 19`); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() {
					if _, err := db.SQL().ExecContext(context.Background(), `UPDATE fans SET checked_at = 0 WHERE checked_at IS NULL`); err != nil {
						b.Fatal(err)
					}
				})
				for b.Loop() {
					next, err := db.NextFansToCheck(b.Context(), 100, true)
					if err != nil || len(next.New) != 100 {
						b.Fatalf("%d new fans to check, err %v", len(next.New), err)
					}
				}
			})
			b.Run("Sweep", func(b *testing.B) {
				if _, _, err := db.StartSweep(b.Context(), store.SweepRequested, now); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					next, err := db.NextFansToCheck(b.Context(), 100, true)
					if err != nil || len(next.Swept) != 100 {
						b.Fatalf("%d swept fans to check, err %v", len(next.Swept), err)
					}
				}
			})
			b.Run("SweepMidway", func(b *testing.B) {
				// Half the fans checked by the sweep, its cursor where the
				// last of them stands.
				s, err := db.LatestSweep(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				for _, q := range []string{
					`UPDATE fans SET checked_at = ` + strconv.FormatInt(now.UnixMilli()+1, 10) + ` WHERE importance >= 55`,
					`UPDATE reconcile_sweeps SET cursor_linked = 0, cursor_importance = 55, cursor_day = 0, cursor_created = 0, cursor_unionid = '' WHERE id = ` + strconv.FormatInt(s.ID, 10),
				} {
					if _, err := db.SQL().ExecContext(b.Context(), q); err != nil {
						b.Fatal(err)
					}
				}
				for b.Loop() {
					next, err := db.NextFansToCheck(b.Context(), 100, true)
					if err != nil || len(next.Swept) != 100 {
						b.Fatalf("%d swept fans to check, err %v", len(next.Swept), err)
					}
				}
			})
			b.Run("SweepStatus", func(b *testing.B) {
				for b.Loop() {
					s, err := db.LatestSweep(b.Context())
					if err != nil || s.Remaining != int64(fans) || !s.Running() {
						b.Fatalf("sweep %+v, err %v", s, err)
					}
				}
			})
		})
	}
}
