package main

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// BenchmarkServe_StatusAtScale measures GET /v1/status and GET /v1/quota,
// read afresh, through a running pendinglink (SQLite, the fake WeCom) whose
// database holds PENDINGLINK_BENCH_FANS registered fans (default 100,000),
// each with a live pending_id, and a tenth as many queued. BENCHMARKS.md
// has the figures at 10,000,000.
func BenchmarkServe_StatusAtScale(b *testing.B) {
	fans := storetest.BenchFans(b, 100_000)
	path := filepath.Join(b.TempDir(), "scale.db")
	w := startE2E(b, e2eOptions{
		Env: map[string]string{"PENDINGLINK_DB": path},
		BeforeStart: func(wc *wecomtest.Server) {
			db, err := store.Open(b.Context(), store.Config{DSN: path})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			storetest.SeedFans(b, db, fans, fans/10, wc.Clock.Now())
		},
	})
	var st apiclient.StatusResponse
	w.getJSON("/v1/status", &st)
	if st.Fans.Registered != int64(fans) || st.Fans.Queued != int64(fans/10) {
		b.Fatalf("status: %d registered, %d queued; seeded %d and %d", st.Fans.Registered, st.Fans.Queued, fans, fans/10)
	}
	for _, path := range []string{"/v1/status", "/v1/quota"} {
		b.Run(path, func(b *testing.B) {
			w := w.in(b)
			for b.Loop() {
				if code, body := w.do(http.MethodGet, path, nil, true); code != http.StatusOK {
					b.Fatalf("GET %s: %d %s", path, code, body)
				}
			}
		})
	}
}
