package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// BenchmarkPipeline_Burst measures how well resolve jobs are coalesced when a
// backlog of add events meets the workers at once (a burst, or a restart
// after an outage): the events are stored first, then pendinglink starts and
// resolves them all. It reports batch calls per minimum possible call
// (ceil(events/100) per dealer corp; 1.00 is perfect) and events resolved per
// second.
//
//	go test -run '^$' -bench Pipeline_Burst -benchtime 3x .
func BenchmarkPipeline_Burst(b *testing.B) {
	const (
		dealers  = 3
		perCorp  = 1000
		minCalls = dealers * ((perCorp + wecom.MaxBatchIDs - 1) / wecom.MaxBatchIDs)
	)
	ctx := context.Background()
	var calls, elapsed float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		wc := wecomtest.NewServer(wecomtest.WithPendingForUnregistered(true))
		dbPath := filepath.Join(b.TempDir(), "burst.db")
		// The events and their resolve jobs are written as the server would.
		db := storetest.MustOpen(b, store.Config{DSN: dbPath, Jobs: pipeline.Policy{}})
		for d := range dealers {
			dealer := wc.AddDealer("dealer-" + strconv.Itoa(d))
			for range perCorp {
				c := wc.AddCustomer(dealer, wc.AddPerson(), dealer.Staff[0])
				ev := wc.ContactEvent(c, wecom.ChangeAddExternalContact)
				raw, err := ev.Marshal()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := db.SaveEvent(ctx, &store.Event{
					DedupKey: ev.DedupKey(raw), CorpID: ev.ToUserName, Kind: ev.Kind(), Event: ev.Event,
					ChangeType: ev.ChangeType, UserID: ev.UserID, ExternalUserID: ev.ExternalUserID, Raw: raw,
				}); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		env := map[string]string{
			"WECOM_CORP_ID": wc.CorpID, "WECOM_AGENT_ID": strconv.FormatInt(wc.AgentID, 10), "WECOM_CORP_SECRET": wc.CorpSecret,
			"WECOM_CALLBACK_TOKEN": "benchtoken", "WECOM_CALLBACK_AES_KEY": wecomtest.RandomAESKey(), "WECOM_API_BASE": wc.URL,
			"PENDINGLINK_ADMIN_TOKEN": wecomtest.RandomToken(24), "PENDINGLINK_ADDR": "127.0.0.1:0", "PENDINGLINK_DB": dbPath,
		}
		for _, k := range []string{"PENDINGLINK_RESOLVE_WINDOW", "PENDINGLINK_RESOLVE_MAX_WAIT", "PENDINGLINK_RESOLVE_WORKERS"} {
			if v := os.Getenv(k); v != "" {
				env[k] = v // to compare settings: the defaults are what is measured otherwise
			}
		}
		cfg, err := loadConfig("bench", nil, mapEnv(env), io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		a, err := startApp(ctx, cfg, slog.New(slog.DiscardHandler), appOptions{HTTPClient: wc.HTTPClient()})
		if err != nil {
			b.Fatal(err)
		}
		err = drained(ctx, a.db)
		took := time.Since(start)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		calls += float64(wc.Calls(wecomtest.APIExternalUserIDToPendingID))
		elapsed += took.Seconds()
		if err := a.close(); err != nil {
			b.Fatal(err)
		}
		wc.Close()
	}
	b.ReportMetric(calls/float64(b.N)/minCalls, "calls/min")
	b.ReportMetric(float64(b.N*dealers*perCorp)/elapsed, "events/s")
	b.ReportMetric(0, "ns/op")
}

// drained polls until no event is pending, for at most two minutes.
func drained(ctx context.Context, db *store.DB) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ps, err := db.PipelineStatus(ctx, 0); ps.EventsPending > 0 || err != nil; ps, err = db.PipelineStatus(ctx, 0) {
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
