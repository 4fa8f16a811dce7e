package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", to create the test database
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// postgresForTest creates a fresh database on the server that
// PENDINGLINK_TEST_POSTGRES names, drops it when t ends, and returns its
// DSN. Without the variable the test is skipped.
func postgresForTest(t *testing.T) string {
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
	bin := buildBinary(t)
	wc := wecomtest.NewServer(wecomtest.WithQuotas(wecomtest.Quota{Hour: 1 << 30, Day: 1 << 30, Month: 1 << 30}, wecomtest.Quota{}))
	t.Cleanup(wc.Close)
	dealer := wc.AddDealer("dealer-1", "staff-a")
	token, aesKey, admin := wecomtest.RandomToken(16), wecomtest.RandomAESKey(), wecomtest.RandomToken(32)
	env := fakeWeComEnv(wc, token, aesKey, admin, dsn, []wecomtest.Dealer{dealer})
	env["WECOM_PENDING_QUOTA_HOUR"], env["WECOM_PENDING_QUOTA_DAY"], env["WECOM_PENDING_QUOTA_MONTH"] = "100000000", "100000000", "100000000"
	env["PENDINGLINK_BACKFILL_EXISTING"] = "false"
	logs := serveLog(t, 150)
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: e2eTimeout}
	api := func(p *serveProc) *apiclient.Client {
		return &apiclient.Client{BaseURL: "http://" + p.addr, Token: admin, HTTPClient: client}
	}
	sender := func(p *serveProc) *wecomtest.Sender {
		sd, err := wc.NewSender(wecomtest.SenderConfig{URL: "http://" + p.addr + handlers.DefaultCallbackPath, Token: token,
			EncodingAESKey: aesKey, HTTPClient: client, Timeout: e2eTimeout, MaxAttempts: 1})
		require.NoError(t, err)
		return sd
	}

	// Three instances start at once on a fresh database: migrations run once.
	// Each instance has its own name, kept across its restart.
	envOf := func(i int) map[string]string {
		e := maps.Clone(env)
		e["PENDINGLINK_INSTANCE_ID"] = fmt.Sprintf("pl-%d", i)
		return e
	}
	procs := make([]*serveProc, instances)
	var wg sync.WaitGroup
	for i := range procs {
		wg.Go(func() { procs[i] = startServe(t, bin, envOf(i), logs) })
	}
	wg.Wait()

	fans := make([]store.FanInput, customers)
	events := make([]wecom.Event, customers)
	for i := range events {
		p := wc.AddPerson()
		fans[i] = store.FanInput{UnionID: p.UnionID, OpenID: p.OpenID}
		events[i] = wc.ContactEvent(wc.AddCustomer(dealer, p, "staff-a"), wecom.ChangeAddExternalContact)
	}
	_, err := api(procs[0]).RegisterFans(t.Context(), fans)
	require.NoError(t, err)
	waitAll := func(ps []*serveProc, what string, cond func(apiclient.StatusResponse) bool) {
		t.Helper()
		deadline := time.Now().Add(2 * e2eTimeout)
		tick := time.NewTicker(50 * time.Millisecond) // outside processes: poll them
		defer tick.Stop()
		for _, p := range ps {
			for {
				st, err := api(p).Status(t.Context())
				require.NoError(t, err)
				if cond(st) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("timed out waiting for %s: %+v", what, st)
				}
				<-tick.C
			}
		}
	}
	waitAll(procs[:1], "every fan registered", func(st apiclient.StatusResponse) bool { return st.Fans.Registered == customers })

	// The burst, round robin over the instances; instance 1 dies at the
	// killAt-th acknowledgement.
	senders := make([]*wecomtest.Sender, instances)
	for i, p := range procs {
		senders[i] = sender(p)
	}
	statuses := make([]int, customers)
	var acks atomic.Int64
	killNow, burstDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(burstDone)
		inParallel(12, customers, func(i int) {
			res, err := senders[i%instances].Send(context.Background(), events[i])
			if err != nil && !errors.Is(err, wecomtest.ErrNotDelivered) {
				t.Errorf("delivery %d: %v", i, err)
			}
			statuses[i] = res.Status
			if res.Status == http.StatusOK && acks.Add(1) == killAt {
				close(killNow)
			}
		})
	}()
	select {
	case <-killNow:
	case <-burstDone:
		t.Fatalf("the burst ended before the kill point")
	}
	procs[1].kill(t)
	<-burstDone
	failed := 0
	for i := range events {
		if statuses[i] == http.StatusOK {
			continue
		}
		failed++
		// The balancer passes what failed to a live instance.
		_, err := senders[[]int{0, 2}[i%2]].Send(t.Context(), events[i])
		require.NoError(t, err, "resend of %d", i)
	}
	require.Positive(t, failed, "the kill interrupted the burst")

	procs[1] = startServe(t, bin, envOf(1), logs)
	waitAll(procs, "every customer linked, seen by every instance", func(st apiclient.StatusResponse) bool {
		return st.Links.Active == customers && st.Queue.Pending == 0
	})
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
	t.Logf("%d callbacks over %d instances, one killed at the %dth acknowledgement: %d resent, all %d linked once; %d batch calls for at least %d",
		customers, instances, killAt, failed, customers, wc.Calls(wecomtest.APIExternalUserIDToPendingID), (customers+wecom.MaxBatchIDs-1)/wecom.MaxBatchIDs)
}
