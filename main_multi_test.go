package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", to create the test database
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// postgresForTest creates a fresh database on the server that
// PENDINGLINK_TEST_POSTGRES names, drops it when t ends, and returns its
// DSN. Without the variable the test is skipped.
func postgresForTest(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("PENDINGLINK_TEST_POSTGRES")
	if admin == "" {
		t.Skip("set PENDINGLINK_TEST_POSTGRES (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable) to run the PostgreSQL tests")
	}
	db, err := sql.Open("pgx", admin)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	name := fmt.Sprintf("pendinglink_e2e_%d_%d", os.Getpid(), time.Now().UnixNano())
	_, err = db.ExecContext(t.Context(), `CREATE DATABASE `+name)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := db.ExecContext(context.Background(), `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`)
		if err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	u, err := url.Parse(admin)
	require.NoError(t, err)
	u.Path = "/" + name
	return u.String()
}

// TestServe_ThreeInstancesOnPostgres: three real `pendinglink serve`
// processes share one PostgreSQL database behind a load balancer that
// spreads callbacks over them. One is SIGKILLed mid-burst; what it left
// unanswered is resent to another (as the balancer and WeCom's retries
// would), then it is restarted. Every fan–customer pair is linked exactly
// once, every acknowledged event is stored once, and all three instances
// answer the same /v1/status.
func TestServe_ThreeInstancesOnPostgres(t *testing.T) {
	dsn := postgresForTest(t)
	t.Parallel()
	const (
		customers = 600
		instances = 3
		killAt    = customers / 3
	)
	w := newBurstWorld(t, dsn)
	wc := w.wc
	rig := newKillRig(t, wc, w.token, w.aesKey, w.env, 12)
	api := func(p *serveProc) *apiclient.Client {
		return &apiclient.Client{BaseURL: "http://" + p.addr, Token: w.admin, HTTPClient: rig.client}
	}

	// Three instances start at once on a fresh database: migrations run
	// once. Each has its own name, kept across its restart.
	name := func(i int) string { return fmt.Sprintf("pl-%d", i) }
	procs := make([]*serveProc, instances)
	var wg sync.WaitGroup
	for i := range procs {
		wg.Go(func() { procs[i] = rig.start("PENDINGLINK_INSTANCE_ID", name(i)) })
	}
	wg.Wait()

	fans, events := w.customers(customers)
	_, err := api(procs[0]).RegisterFans(t.Context(), fans)
	require.NoError(t, err)
	waitForStatus(t, api(procs[0]), "every fan registered", func(st apiclient.StatusResponse) bool { return st.Fans.Registered == customers })

	// The burst, round robin over the instances; instance 1 dies at the
	// killAt-th acknowledgement. What went unanswered is passed to a live
	// instance, as the load balancer and WeCom's retries would.
	senders := make([]*wecomtest.Sender, instances)
	for i, p := range procs {
		senders[i] = rig.sender(p, 1)
	}
	statuses := rig.burstOverUntilKilled(senders, procs[1], events, killAt)
	failed := 0
	for i, err := range rig.resendUnanswered(procs[2], events, statuses) {
		require.NoError(t, err, "resend of %d", i)
		if statuses[i] != http.StatusOK {
			failed++
		}
	}
	require.Positive(t, failed, "the kill interrupted the burst")

	procs[1] = rig.start("PENDINGLINK_INSTANCE_ID", name(1))
	for _, p := range procs {
		waitForStatus(t, api(p), "every customer linked, seen by every instance", func(st apiclient.StatusResponse) bool {
			return st.Links.Active == customers && st.Queue.Pending == 0
		})
	}
	var first apiclient.StatusResponse
	for i, p := range procs {
		st, err := api(p).Status(t.Context())
		require.NoError(t, err)
		shared := []int64{st.Events.Received, st.Events.Resolved, st.Fans.Registered, st.Links.Total, st.Links.Active, st.Queue.Pending}
		require.EqualValues(t, customers, st.Events.Received, "instance %d: each event stored once", i)
		require.EqualValues(t, customers, st.Links.Total, "instance %d: each pair linked once", i)
		if i == 0 {
			first = st
			continue
		}
		require.Equal(t, []int64{first.Events.Received, first.Events.Resolved, first.Fans.Registered, first.Links.Total,
			first.Links.Active, first.Queue.Pending}, shared, "instance %d answers like instance 0", i)
	}
	// Three processes wrote side by side, one killed mid-write: the counts
	// the status read (tallies, kept by triggers) match a recount.
	db, err := store.Open(t.Context(), store.Config{DSN: dsn})
	require.NoError(t, err)
	defer db.Close()
	drift, err := db.CheckTallies(t.Context())
	require.NoError(t, err)
	require.Empty(t, drift, "status counts agree with a recount")
	t.Logf("%d callbacks over %d instances, one killed at the %dth acknowledgement: %d resent, all %d linked once; %d batch calls for at least %d",
		customers, instances, killAt, failed, customers, wc.Calls(wecomtest.APIExternalUserIDToPendingID), (customers+wecom.MaxBatchIDs-1)/wecom.MaxBatchIDs)
}
