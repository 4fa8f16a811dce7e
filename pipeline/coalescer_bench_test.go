package pipeline

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pendinglink/pendinglink/wecom"
)

// nopResolver answers every id at once and allocates nothing, so the
// benchmark measures the Coalescer alone.
type nopResolver struct{}

func (nopResolver) ExternalUserIDToPendingID(context.Context, string, string, []string) ([]wecom.PendingResult, error) {
	return nil, nil
}

// BenchmarkCoalescer measures the overhead of one Resolve with a resolver
// that costs nothing.
//
// Sequential: MaxBatch 1, so each Resolve fills its own batch and pays for a
// timer, a goroutine and a map entry with nobody to share them.
// Parallel200: 200 goroutines (like 200 River workers) ask distinct ids in
// one group with the default MaxBatch of 100; ids/call shows how full the
// batches were. The 1ms window only ends the last partial batch.
func BenchmarkCoalescer(b *testing.B) {
	b.Run("Sequential", func(b *testing.B) {
		c, err := NewCoalescer(nopResolver{}, CoalescerConfig{MaxBatch: 1})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := c.Resolve(ctx, "wwcorp", "", "wm"+strconv.Itoa(i)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})

	b.Run("Parallel200", func(b *testing.B) {
		c, err := NewCoalescer(nopResolver{}, CoalescerConfig{Window: time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		ctx := context.Background()
		var next atomic.Int64
		b.ReportAllocs()
		// RunParallel starts parallelism × GOMAXPROCS goroutines.
		b.SetParallelism(max(1, 200/runtime.GOMAXPROCS(0)))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				id := "wm" + strconv.FormatInt(next.Add(1), 10)
				if _, err := c.Resolve(ctx, "wwcorp", "", id); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		st := c.Stats()
		if st.Calls > 0 {
			b.ReportMetric(float64(st.IDs)/float64(st.Calls), "ids/call")
		}
	})
}
