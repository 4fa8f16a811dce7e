package main

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"net/http"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// BenchmarkBatchingAcrossInstances sends a burst of 1,500 adds (all
// registered fans) round robin to 1 and to 3 real `serve` processes on a
// fresh PostgreSQL database each and reports the batch lookup calls it cost
// ("calls"; the minimum is 15) and how many instances worked resolve jobs
// ("resolvers": one at a time holds the resolve queue's lease, so 1). It
// needs PENDINGLINK_TEST_POSTGRES:
//
//	PENDINGLINK_TEST_POSTGRES=… go test -run XXX -bench BatchingAcrossInstances -benchtime 1x .
func BenchmarkBatchingAcrossInstances(b *testing.B) {
	bin := buildBinary(b)
	// rate 0 sends as fast as 24 connections go, which depends on how fast
	// the instances acknowledge; a fixed rate sends the same stream to both
	// set-ups, so that only where the callbacks land differs.
	for _, rate := range []int{0, 500} {
		for _, instances := range []int{1, 3} {
			b.Run(fmt.Sprintf("rate=%d/instances=%d", rate, instances), func(b *testing.B) {
				calls, resolvers, runs := 0, 0, 0
				for b.Loop() {
					c, r := burstOverInstances(b, bin, instances, 1500, rate)
					calls, resolvers = calls+c, resolvers+r
					runs++
				}
				b.ReportMetric(float64(calls)/float64(runs), "calls")
				b.ReportMetric(float64(resolvers)/float64(runs), "resolvers")
			})
		}
	}
}

// burstOverInstances runs one burst (rate callbacks a second in all, 0:
// as fast as they are acknowledged) and returns the batch calls it cost
// and the number of instances that worked its resolve jobs.
func burstOverInstances(b *testing.B, bin string, instances, customers, rate int) (calls, resolvers int) {
	dsn := postgresForTest(b)
	w := newBurstWorld(b, dsn)
	wc, env := w.wc, w.env
	delete(env, "PENDINGLINK_RESOLVE_WINDOW") // what is measured is the default window
	logs := serveLog(b, 50)
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: e2eTimeout}
	senders := make([]*wecomtest.Sender, instances)
	var api *apiclient.Client
	for i := range senders {
		e := maps.Clone(env)
		e["PENDINGLINK_INSTANCE_ID"] = fmt.Sprintf("pl-%d", i)
		p := startServe(b, bin, e, logs)
		api = &apiclient.Client{BaseURL: "http://" + p.addr, Token: w.admin, HTTPClient: client}
		s, err := wc.NewSender(wecomtest.SenderConfig{URL: "http://" + p.addr + handlers.DefaultCallbackPath, Token: w.token, EncodingAESKey: w.aesKey, HTTPClient: client})
		require.NoError(b, err)
		senders[i] = s
	}

	fans, events := w.customers(customers)
	for lo := 0; lo < len(fans); lo += 1000 {
		_, err := api.RegisterFans(b.Context(), fans[lo:min(lo+1000, len(fans))])
		require.NoError(b, err)
	}
	waitForStatus(b, api, "every fan registered", func(st apiclient.StatusResponse) bool { return st.Fans.Registered == int64(customers) })
	before := wc.Calls(wecomtest.APIExternalUserIDToPendingID)

	var tick <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		tick = t.C
	}
	inParallel(24, customers, func(i int) {
		if tick != nil {
			<-tick
		}
		_, err := senders[i%instances].Send(context.Background(), events[i])
		if err != nil {
			b.Errorf("send %d: %v", i, err)
		}
	})
	waitForStatus(b, api, "every customer linked", func(st apiclient.StatusResponse) bool { return st.Links.Active == int64(customers) })
	calls = wc.Calls(wecomtest.APIExternalUserIDToPendingID) - before

	db, err := sql.Open("pgx", dsn)
	require.NoError(b, err)
	defer db.Close()
	require.NoError(b, db.QueryRowContext(b.Context(), `SELECT count(DISTINCT attempted_by[array_length(attempted_by, 1)])
		FROM river_job WHERE kind = 'resolve'`).Scan(&resolvers))
	return calls, resolvers
}
