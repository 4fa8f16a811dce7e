package storetest

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/pendinglink/pendinglink/store"
)

// SeedFans writes registered fans, each with a live pending_id issued at a
// time spread over the 90 days before now, and queued ones (bulk, priority
// 10 to 99), straight into db in set-based statements of 100,000 rows, for
// benchmarks at the scale of millions (the API would take hours). The
// tally triggers count them as any write. Unionids are "bench-u<i>".
func SeedFans(tb testing.TB, db *store.DB, registered, queued int, now time.Time) {
	tb.Helper()
	n := registered
	nowMS, life := now.UnixMilli(), store.PendingIDLifetime.Milliseconds()
	seq := func(from, to int) string {
		return fmt.Sprintf(`WITH RECURSIVE seq(i) AS (SELECT CAST(%d AS BIGINT) UNION ALL SELECT i + 1 FROM seq WHERE i < %d) `, from, to-1)
	}
	const chunk = 100_000
	for from := 0; from < n+queued; from += chunk {
		to := min(from+chunk, n+queued)
		regTo := min(to, n)
		if from < regTo {
			issued := fmt.Sprintf(`%d - (i * 7919 %% %d)`, nowMS, life-1) // spread, never expired
			for _, q := range []string{
				seq(from, regTo) + `INSERT INTO fans (unionid, openid, state, importance, registered_at, checked_at, created_at, updated_at)
					SELECT 'bench-u' || i, 'bench-o' || i, 'registered', 10 + i % 90, ` + issued + `, 0, 0, 0 FROM seq`,
				seq(from, regTo) + `INSERT INTO fan_pending_ids (pending_id, unionid, issued_at, expires_at)
					SELECT 'bench-p' || i, 'bench-u' || i, ` + issued + `, ` + issued + ` + ` + strconv.FormatInt(life, 10) + ` FROM seq`,
			} {
				if _, err := db.SQL().ExecContext(tb.Context(), q); err != nil {
					tb.Fatal(err)
				}
			}
		}
		if qFrom := max(from, n); qFrom < to {
			q := seq(qFrom, to) + fmt.Sprintf(`INSERT INTO fans (unionid, openid, state, importance, queued_at, queue_class, created_at, updated_at)
				SELECT 'bench-u' || i, 'bench-o' || i, 'new', 10 + i %% 90, i, 3, 0, 0 FROM seq`)
			if _, err := db.SQL().ExecContext(tb.Context(), q); err != nil {
				tb.Fatal(err)
			}
		}
	}
	// A database written for months has been vacuumed as it went; one
	// written at once has not, and PostgreSQL would read every dead version
	// the triggers left. SQLite has no version(), and no such debt.
	if _, err := db.SQL().ExecContext(tb.Context(), `SELECT version()`); err == nil {
		if _, err := db.SQL().ExecContext(tb.Context(), `VACUUM ANALYZE fans, fan_pending_ids, tallies`); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchFans is the number of fans a benchmark at scale seeds:
// PENDINGLINK_BENCH_FANS, or def when unset.
func BenchFans(tb testing.TB, def int) int {
	tb.Helper()
	s := os.Getenv("PENDINGLINK_BENCH_FANS")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		tb.Fatalf("PENDINGLINK_BENCH_FANS: %q is not a number of fans", s)
	}
	return n
}
