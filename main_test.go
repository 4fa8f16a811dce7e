package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/apiclient/openapitest"
	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/internal/syncbuf"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

const (
	testCorpID     = "wwtestcorp000001"
	testToken      = "QDG6eK"
	testAESKey     = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	testSecret     = "test-corp-secret-do-not-log"
	testAdminToken = "test-admin-token-0123456789"
)

func testEnv(dbPath string) map[string]string {
	return map[string]string{
		"WECOM_CORP_ID": testCorpID, "WECOM_AGENT_ID": "1000002", "WECOM_CORP_SECRET": testSecret,
		"WECOM_CALLBACK_TOKEN": testToken, "WECOM_CALLBACK_AES_KEY": testAESKey,
		"PENDINGLINK_ADMIN_TOKEN": testAdminToken, "PENDINGLINK_ADDR": "127.0.0.1:0",
		"PENDINGLINK_DB": dbPath,
		// Nothing listens there: these tests exercise ingress, and the
		// pipeline must never reach the real WeCom from a test.
		"WECOM_API_BASE": "http://127.0.0.1:1",
	}
}

// testDBPassword is a database password that must never be logged.
const testDBPassword = "db-pass-7f3k"

func TestLoadConfig(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		env := testEnv("x.db")
		delete(env, "WECOM_API_BASE")
		cfg, err := loadConfig("serve", nil, mapEnv(env), io.Discard)
		require.NoError(t, err)
		require.Equal(t, testCorpID, cfg.CorpID)
		require.Equal(t, "https://qyapi.weixin.qq.com", cfg.APIBase)
		require.Equal(t, 24*time.Hour, cfg.CallbackMaxAge)
		require.Equal(t, "/wecom/callback", cfg.CallbackPath)
		require.Equal(t, "allowlist", cfg.ReceiveIDCheck)
		require.EqualValues(t, handlers.DefaultBodyLimit, cfg.CallbackMaxBytes)
		require.True(t, cfg.Backfill, "existing customers are checked by default")
		require.Equal(t, time.Minute, cfg.ReconcileAfterDowntime)
		require.Equal(t, pipeline.RenewEarlyAuto, cfg.RenewEarly, "renewals learn when to start")
		require.EqualValues(t, pipeline.DefaultRenewLearnAfter, cfg.RenewLearnAfter)
	})

	t.Run("RenewEarly", func(t *testing.T) {
		t.Parallel()
		cfg, err := loadConfig("serve", []string{"--pendinglink-renew-early", "never", "--pendinglink-renew-learn-after", "50"},
			mapEnv(testEnv("x.db")), io.Discard)
		require.NoError(t, err)
		require.Equal(t, pipeline.RenewEarlyNever, cfg.RenewEarly)
		require.EqualValues(t, 50, cfg.RenewLearnAfter)
	})

	t.Run("FlagOverridesEnv", func(t *testing.T) {
		t.Parallel()
		cfg, err := loadConfig("serve", []string{"--pendinglink-callback-max-age", "0", "--wecom-downstream-corp-ids", "wwa, wwb"},
			mapEnv(testEnv("x.db")), io.Discard)
		require.NoError(t, err)
		require.Zero(t, cfg.CallbackMaxAge)
		require.Equal(t, []string{"wwa", "wwb"}, cfg.DownstreamCorps)
	})

	for _, tc := range []struct{ name, env, value, want string }{
		{"ErrMissingCorpID", "WECOM_CORP_ID", "", "WECOM_CORP_ID: required"},
		{"ErrMissingSecret", "WECOM_CORP_SECRET", "", "WECOM_CORP_SECRET: required"},
		{"ErrBadAgentID", "WECOM_AGENT_ID", "abc", "WECOM_AGENT_ID: must be a positive integer"},
		{"ErrBadReceiveIDCheck", "WECOM_RECEIVE_ID_CHECK", "maybe", "WECOM_RECEIVE_ID_CHECK: must be"},
		{"ErrShortAdminToken", "PENDINGLINK_ADMIN_TOKEN", "short-secret", "PENDINGLINK_ADMIN_TOKEN: must be at least 16"},
		{"ErrBadMaxAge", "PENDINGLINK_CALLBACK_MAX_AGE", "soon", "PENDINGLINK_CALLBACK_MAX_AGE: must be"},
		{"ErrBadLogLevel", "PENDINGLINK_LOG_LEVEL", "loud", "PENDINGLINK_LOG_LEVEL"},
		{"ErrTinyBodyCap", "PENDINGLINK_CALLBACK_MAX_BYTES", "99", "PENDINGLINK_CALLBACK_MAX_BYTES: must be an integer from 1024"},
		{"ErrHugeBodyCap", "PENDINGLINK_CALLBACK_MAX_BYTES", "99999999", "PENDINGLINK_CALLBACK_MAX_BYTES: must be an integer from 1024"},
		{"ErrBadRenewEarly", "PENDINGLINK_RENEW_EARLY", "sometimes", "PENDINGLINK_RENEW_EARLY: must be auto, always or never"},
		{"ErrZeroRenewLearnAfter", "PENDINGLINK_RENEW_LEARN_AFTER", "0", "PENDINGLINK_RENEW_LEARN_AFTER: must be a positive integer"},
		{"ErrZeroReconcileInterval", "PENDINGLINK_RECONCILE_INTERVAL", "0s", "PENDINGLINK_RECONCILE_INTERVAL: must be positive"},
		{"ErrResolveWorkersOverRiversLimit", "PENDINGLINK_RESOLVE_WORKERS", "10001", "PENDINGLINK_RESOLVE_WORKERS: must be an integer from 1 to 10000"},
		{"ErrZeroQuotaFloor", "WECOM_QUOTA_FLOOR", "0", "WECOM_QUOTA_FLOOR: must be"},
		{"ErrZeroNotCustomerYetDelay", "PENDINGLINK_NOT_CUSTOMER_YET_DELAY", "0s", "PENDINGLINK_NOT_CUSTOMER_YET_DELAY: must be positive"},
		{"ErrZeroRenewBefore", "PENDINGLINK_RENEW_BEFORE", "0s", "PENDINGLINK_RENEW_BEFORE: must be positive"},
		{"ErrZeroTokenRefreshInterval", "WECOM_TOKEN_REFRESH_INTERVAL", "0s", "WECOM_TOKEN_REFRESH_INTERVAL: must be positive"},
		{"ErrZeroResolveWindow", "PENDINGLINK_RESOLVE_WINDOW", "0s", "PENDINGLINK_RESOLVE_WINDOW: must be positive"},
		{"ErrResolveMaxWaitBelowWindow", "PENDINGLINK_RESOLVE_MAX_WAIT", "10ms", "PENDINGLINK_RESOLVE_MAX_WAIT: must be at least PENDINGLINK_RESOLVE_WINDOW"},
		{"ErrZeroShutdownTimeout", "PENDINGLINK_SHUTDOWN_TIMEOUT", "0s", "PENDINGLINK_SHUTDOWN_TIMEOUT: must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := testEnv("x.db")
			env[tc.env] = tc.value
			_, err := loadConfig("serve", nil, mapEnv(env), io.Discard)
			require.ErrorContains(t, err, tc.want)
			if len(tc.value) > 1 { // one character may stand in any message
				require.NotContains(t, err.Error(), tc.value, "errors never echo the value")
			}
		})
	}

	t.Run("TrustedProxies", func(t *testing.T) {
		t.Parallel()
		cfg, err := loadConfig("serve", nil, mapEnv(testEnv("x.db")), io.Discard)
		require.NoError(t, err)
		require.Empty(t, cfg.TrustedProxies, "by default no header is believed")
		env := testEnv("x.db")
		env["PENDINGLINK_TRUSTED_PROXIES"] = "10.0.0.0/8, 192.0.2.1 ,2001:db8::/32"
		cfg, err = loadConfig("serve", nil, mapEnv(env), io.Discard)
		require.NoError(t, err)
		var got []string
		for _, n := range cfg.TrustedProxies {
			got = append(got, n.String())
		}
		require.Equal(t, []string{"10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"}, got)
		for _, bad := range []string{"10.0.0.0/33", "proxy.internal", "10.0.0.0/8,,x"} {
			env["PENDINGLINK_TRUSTED_PROXIES"] = bad
			_, err = loadConfig("serve", nil, mapEnv(env), io.Discard)
			require.ErrorContains(t, err, "PENDINGLINK_TRUSTED_PROXIES: must be", bad)
		}
	})

	t.Run("ErrCallbackPathTakenByTheServer", func(t *testing.T) {
		// The check is the one handlers.New makes, here at start-up with
		// the variable's name, so that "check" reports it too.
		t.Parallel()
		for _, path := range []string{"/healthz", "/v1/callback", "/ui/cb", "/riverui", "/wecom/*", "wecom/callback"} {
			env := testEnv("x.db")
			env["PENDINGLINK_CALLBACK_PATH"] = path
			_, err := loadConfig("serve", nil, mapEnv(env), io.Discard)
			require.ErrorContains(t, err, "PENDINGLINK_CALLBACK_PATH: ", path)
		}
	})

	t.Run("UsageNeverShowsSecrets", func(t *testing.T) {
		// Ensure the flag package's usage, printed for -h and for any
		// mistyped flag, shows no value from the environment, and an
		// argument given by mistake is not echoed: either may hold a secret.
		t.Parallel()
		env := testEnv("postgres://pendinglink:" + testDBPassword + "@db.internal:5432/pl")
		for _, args := range [][]string{{"-h"}, {"--no-such-flag"}, {"postgres://pl:" + testDBPassword + "@db/pl"}} {
			var stderr bytes.Buffer
			_, err := loadConfig("serve", args, mapEnv(env), &stderr)
			require.Error(t, err)
			for _, secret := range []string{testSecret, testToken, testAESKey, testAdminToken, testDBPassword} {
				require.NotContains(t, stderr.String()+err.Error(), secret, "%v", args)
			}
		}
		cfg, err := loadConfig("serve", nil, mapEnv(env), io.Discard)
		require.NoError(t, err)
		require.Equal(t, testSecret, cfg.CorpSecret, "the environment still applies")
	})

	t.Run("SecretsAreMaskedInLogs", func(t *testing.T) {
		t.Parallel()
		cfg, err := loadConfig("serve", nil, mapEnv(testEnv("postgres://pendinglink:"+testDBPassword+"@db.internal:5432/pl")), io.Discard)
		require.NoError(t, err)
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("cfg", "config", cfg)
		for _, secret := range []string{testSecret, testToken, testAESKey, testAdminToken, testDBPassword} {
			require.NotContains(t, buf.String(), secret)
		}
		require.Contains(t, buf.String(), testCorpID)
	})
}

func TestRun(t *testing.T) {
	t.Parallel()

	t.Run("Version", func(t *testing.T) {
		t.Parallel()
		var out bytes.Buffer
		require.NoError(t, run(context.Background(), []string{"version"}, mapEnv(nil), &out, io.Discard))
		require.True(t, strings.HasPrefix(out.String(), "pendinglink "))
	})

	t.Run("ErrUnknownCommand", func(t *testing.T) {
		t.Parallel()
		err := run(context.Background(), []string{"frobnicate"}, mapEnv(nil), io.Discard, io.Discard)
		require.ErrorContains(t, err, `unknown command "frobnicate"`)
	})

	t.Run("ErrUnknownCommandIsADSN", func(t *testing.T) {
		// A DSN given where a command goes is named without its password.
		t.Parallel()
		for _, args := range [][]string{{"postgres://pl:" + testDBPassword + "@db/pl"}, {"fans", "postgres://pl:" + testDBPassword + "@db/pl"}} {
			var stderr bytes.Buffer
			err := run(context.Background(), args, mapEnv(nil), io.Discard, &stderr)
			require.ErrorContains(t, err, "unknown")
			require.NotContains(t, err.Error()+stderr.String(), testDBPassword)
		}
	})

	t.Run("ErrInvalidAESKeyNamesTheVariable", func(t *testing.T) {
		t.Parallel()
		env := testEnv(filepath.Join(t.TempDir(), "t.db"))
		env["WECOM_CALLBACK_AES_KEY"] = "tooshort-but-secret"
		err := run(context.Background(), []string{"serve"}, mapEnv(env), io.Discard, io.Discard)
		require.ErrorContains(t, err, "WECOM_CALLBACK_AES_KEY")
		require.NotContains(t, err.Error(), "tooshort-but-secret")
	})

	t.Run("ServeStopsOnCancel", func(t *testing.T) {
		t.Parallel()
		// Ensure serve answers health checks and returns cleanly when its context ends (SIGTERM).
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"serve"}, mapEnv(testEnv(filepath.Join(t.TempDir(), "t.db"))), pw, io.Discard)
			pw.Close()
		}()
		addr := waitListening(t, pr)
		go io.Copy(io.Discard, pr)
		client := &http.Client{Transport: openapitest.MustNew(t).Transport(t, nil)}
		resp, err := client.Get("http://" + addr + "/healthz")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		cancel()
		require.NoError(t, <-done)
	})
}

// waitListening reads JSON log lines until the "listening" line and returns its address.
func waitListening(t testing.TB, r io.Reader) string {
	t.Helper()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var line struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
			return line.Addr
		}
	}
	t.Fatalf("server exited before listening: %v", sc.Err())
	return ""
}

// TestServe_KillNineMidBurstKeepsAcknowledgedEventsOnce builds the real
// binary and SIGKILLs it in the middle of a concurrent burst of callbacks:
// once a third of the acknowledgements are in, while the senders keep
// sending. After a restart on the same database every acknowledged event is
// stored exactly once; after resending every delivery that got no 200 (as
// WeCom does) every event is stored exactly once: resends of events stored
// before the kill (a redelivery of an acknowledged event, or a delivery that
// committed but whose 200 never left) are recognised as duplicates.
//
// SIGKILL proves that the 200 is sent only after the event reached the
// kernel (the WAL file in its page cache): the kernel outlives the process.
// It cannot prove that the fsync reached stable storage; only a power-loss
// or VM-crash test (or a fault-injecting block device) could.
func TestServe_KillNineMidBurstKeepsAcknowledgedEventsOnce(t *testing.T) {
	t.Parallel()
	const (
		customers = 3000
		senders   = 8
		killAt    = customers / 3 // acknowledgements received before the kill
		// lateRedeliveries are redeliveries of the first events at the end of the burst.
		lateRedeliveries = 100
	)
	wc := wecomtest.NewServer()
	t.Cleanup(wc.Close) // registered first, so it runs after the processes are gone
	dealer := wc.AddDealer("dealer-1", "staff-a")
	token, aesKey := wecomtest.RandomToken(16), wecomtest.RandomAESKey()
	dbPath := filepath.Join(t.TempDir(), "kill.db")
	env := fakeWeComEnv(wc, token, aesKey, wecomtest.RandomToken(32), dbPath, []wecomtest.Dealer{dealer})
	rig := newKillRig(t, wc, token, aesKey, env, senders)

	// Every customer's add event once, every fourth one again soon after,
	// and the first ones again at the end, as WeCom redelivers an event
	// whose answer it missed. The kill comes long before the end, so the
	// deliveries to resend include events stored before it (checked below).
	events := make([]wecom.Event, customers)
	var deliveries []wecom.Event
	for i := range events {
		c := wc.AddCustomer(dealer, wc.AddPerson(), "staff-a")
		events[i] = wc.ContactEvent(c, wecom.ChangeAddExternalContact)
		deliveries = append(deliveries, events[i])
		if i%4 == 3 {
			deliveries = append(deliveries, events[i-2])
		}
	}
	deliveries = append(deliveries, events[:lateRedeliveries]...)

	// The burst: one attempt per delivery, its status recorded (0: no answer).
	statuses := rig.burstUntilKilled(rig.start(), deliveries, killAt)
	acked, acks, noAnswer := map[string]bool{}, 0, 0
	for i, ev := range deliveries {
		switch statuses[i] {
		case http.StatusOK:
			acked[ev.ExternalUserID] = true
			acks++
		case 0:
			noAnswer++
		}
	}
	// Without the kill every delivery gets an answer: this is what makes the
	// test a kill mid-burst rather than after it.
	require.Positive(t, noAnswer, "no delivery went unanswered: the kill did not interrupt the burst")
	t.Logf("%d deliveries: %d acknowledged before the kill, %d unanswered", len(deliveries), acks, noAnswer)

	// Restart on the same file: recovery must cope with the crash.
	second := rig.start()
	resp, err := rig.client.Get("http://" + second.addr + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	second.stop(t)
	stored := storedEvents(t, dbPath)
	for id := range acked {
		require.Equal(t, 1, stored[id], "acknowledged event %s stored once", id)
	}
	unacked, resendsOfStored := 0, 0
	for id, n := range stored {
		require.Equal(t, 1, n, "event %s stored once", id)
		if !acked[id] {
			unacked++
		}
	}
	for i, ev := range deliveries {
		if statuses[i] != http.StatusOK && stored[ev.ExternalUserID] > 0 {
			resendsOfStored++
		}
	}
	require.Positive(t, resendsOfStored, "no delivery to resend is of a stored event: the resends test no dedup")
	t.Logf("%d events committed before the kill without any 200; %d resends are of stored events", unacked, resendsOfStored)

	// WeCom resends every delivery that got no 200; the events that had
	// committed anyway must be recognised as duplicates.
	third := rig.start()
	resent := rig.resendUnanswered(third, deliveries, statuses)
	third.stop(t)
	for i, err := range resent {
		require.NoError(t, err, "resend of delivery %d", i)
	}
	stored = storedEvents(t, dbPath)
	require.Len(t, stored, customers)
	for _, ev := range events {
		require.Equal(t, 1, stored[ev.ExternalUserID], "event %s stored once", ev.ExternalUserID)
	}
}

// burstWorld is the set-up the burst tests share: a fake WeCom whose
// quotas never bind, with one dealer whose staff-a adds every customer,
// and the environment of a pendinglink on dsn that calls it and checks no
// existing customers (only the add path runs).
type burstWorld struct {
	wc                   *wecomtest.Server
	dealer               wecomtest.Dealer
	token, aesKey, admin string
	env                  map[string]string
}

func newBurstWorld(tb testing.TB, dsn string) burstWorld {
	wc := wecomtest.NewServer(wecomtest.WithQuotas(wecomtest.Quota{Hour: 1 << 30, Day: 1 << 30, Month: 1 << 30}, wecomtest.Quota{}))
	tb.Cleanup(wc.Close)
	w := burstWorld{wc: wc, dealer: wc.AddDealer("dealer-1", "staff-a"),
		token: wecomtest.RandomToken(16), aesKey: wecomtest.RandomAESKey(), admin: wecomtest.RandomToken(32)}
	w.env = fakeWeComEnv(wc, w.token, w.aesKey, w.admin, dsn, []wecomtest.Dealer{w.dealer})
	w.env["WECOM_PENDING_QUOTA_HOUR"], w.env["WECOM_PENDING_QUOTA_DAY"], w.env["WECOM_PENDING_QUOTA_MONTH"] = "100000000", "100000000", "100000000"
	w.env["PENDINGLINK_BACKFILL_EXISTING"] = "false"
	return w
}

// customers adds n people, each a customer of the dealer's staff-a, and
// returns them as fans to register and the callbacks of their adds.
func (w burstWorld) customers(n int) ([]store.FanInput, []wecom.Event) {
	fans := make([]store.FanInput, n)
	events := make([]wecom.Event, n)
	for i := range events {
		p := w.wc.AddPerson()
		fans[i] = store.FanInput{UnionID: p.UnionID, OpenID: p.OpenID}
		events[i] = w.wc.ContactEvent(w.wc.AddCustomer(w.dealer, p, "staff-a"), wecom.ChangeAddExternalContact)
	}
	return fans, events
}

// killRig is the scaffolding the SIGKILL tests share: the binary with its
// environment and log, and what WeCom's sender needs to deliver callbacks
// to a running process.
type killRig struct {
	t             *testing.T
	bin           string
	env           map[string]string
	logs          *syncbuf.Buffer
	wc            *wecomtest.Server
	token, aesKey string
	senders       int          // concurrent deliveries
	client        *http.Client // shared by every sender: one idle connection per concurrent delivery
}

// newKillRig builds the binary; processes started by the rig read env as it
// is at start.
func newKillRig(t *testing.T, wc *wecomtest.Server, token, aesKey string, env map[string]string, senders int) *killRig {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = senders
	client := &http.Client{Transport: openapitest.MustNew(t).Transport(t, tr)}
	return &killRig{t: t, bin: buildBinary(t), env: env, logs: serveLog(t, 100), wc: wc,
		token: token, aesKey: aesKey, senders: senders, client: client}
}

// start starts a pendinglink process on the rig's environment and log,
// with the extra variables given.
func (r *killRig) start(extra ...string) *serveProc {
	r.t.Helper()
	env := maps.Clone(r.env)
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return startServe(r.t, r.bin, env, r.logs)
}

// waitForStatus polls p's /v1/status (p is another process: there is no
// event to wait on) until cond holds, and fails t after twice e2eTimeout.
func waitForStatus(t testing.TB, api *apiclient.Client, what string, cond func(apiclient.StatusResponse) bool) {
	t.Helper()
	deadline := time.Now().Add(2 * e2eTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := api.Status(t.Context())
		require.NoError(t, err)
		if cond(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v", what, st)
		}
		<-tick.C
	}
}

// sender delivers callbacks to p with up to attempts tries each (0: WeCom's
// retries).
func (r *killRig) sender(p *serveProc, attempts int) *wecomtest.Sender {
	r.t.Helper()
	sd, err := r.wc.NewSender(wecomtest.SenderConfig{URL: "http://" + p.addr + handlers.DefaultCallbackPath, Token: r.token,
		EncodingAESKey: r.aesKey, HTTPClient: r.client, Timeout: e2eTimeout, MaxAttempts: attempts})
	require.NoError(r.t, err)
	return sd
}

// burstUntilKilled delivers every event once (one attempt each) and
// SIGKILLs p at the killAt-th acknowledgement, while the other deliveries
// are still under way. Once all have ended it returns each one's HTTP
// status, 0 where none came.
func (r *killRig) burstUntilKilled(p *serveProc, events []wecom.Event, killAt int64) []int {
	r.t.Helper()
	return r.burstOverUntilKilled([]*wecomtest.Sender{r.sender(p, 1)}, p, events, killAt)
}

// burstOverUntilKilled is burstUntilKilled with the deliveries spread round
// robin over senders (one attempt each), as a load balancer spreads them
// over instances; victim is killed.
func (r *killRig) burstOverUntilKilled(senders []*wecomtest.Sender, victim *serveProc, events []wecom.Event, killAt int64) []int {
	t := r.t
	t.Helper()
	statuses := make([]int, len(events))
	var acks atomic.Int64
	killNow, burstDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(burstDone)
		inParallel(r.senders, len(events), func(i int) {
			res, err := senders[i%len(senders)].Send(context.Background(), events[i])
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
		t.Fatalf("the burst ended with %d acknowledgements, before the kill point (%d)", acks.Load(), killAt)
	}
	victim.kill(t)
	<-burstDone
	return statuses
}

// resendUnanswered delivers again, with WeCom's retries, every event whose
// status is not 200, and returns each resend's error (nil for the events
// not resent).
func (r *killRig) resendUnanswered(p *serveProc, events []wecom.Event, statuses []int) []error {
	r.t.Helper()
	sd := r.sender(p, 0)
	errs := make([]error, len(events))
	inParallel(r.senders, len(events), func(i int) {
		if statuses[i] != http.StatusOK {
			_, errs[i] = sd.Send(context.Background(), events[i])
		}
	})
	return errs
}

// serveLog is a log for pendinglink processes whose last lines a failing
// test prints.
func serveLog(t testing.TB, lines int) *syncbuf.Buffer {
	t.Helper()
	logs := &syncbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pendinglink log (last lines):\n%s", logs.Tail(lines))
		}
	})
	return logs
}

// inParallel calls f(0) … f(n-1) from workers goroutines and returns once
// every call has returned.
func inParallel(workers, n int, f func(i int)) {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		})
	}
	wg.Wait()
}

// buildBinary builds pendinglink (without -race: the binary is what is under
// test, not the test) and returns its path.
func buildBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pendinglink")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())
	return bin
}

// serveProc is a `pendinglink serve` process started by startServe.
type serveProc struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{} // closed once the process has been waited for
	err    error         // cmd.Wait's result, set before exited is closed
}

// startServe starts `bin serve` with env and returns once it listens. Its
// output goes to logs. It is killed when the test ends if still running.
func startServe(t testing.TB, bin string, env map[string]string, logs *syncbuf.Buffer) *serveProc {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, logs
	require.NoError(t, cmd.Start())
	p := &serveProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	p.addr = waitListening(t, io.TeeReader(pr, logs))
	go io.Copy(logs, pr)
	return p
}

// kill SIGKILLs the process and requires that the signal is what ended it.
func (p *serveProc) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	p.wait(t)
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	require.True(t, ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL, "pendinglink ended by %v, not SIGKILL", p.err)
}

// stop SIGTERMs the process and requires a clean exit.
func (p *serveProc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.wait(t)
	require.NoError(t, p.err, "pendinglink exit after SIGTERM")
}

func (p *serveProc) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(e2eTimeout):
		t.Fatalf("pendinglink still running %s after the signal", e2eTimeout)
	}
}

// storedEvents opens the database of a stopped pendinglink and counts its
// stored events by external_userid. The store has no API listing events, so
// the rows are counted in SQL; Status's counter must agree with them.
func storedEvents(t *testing.T, dbPath string) map[string]int {
	t.Helper()
	db := storetest.MustOpen(t, store.Config{DSN: dbPath})
	defer db.Close()
	rows, err := db.SQL().QueryContext(t.Context(), `SELECT external_userid, count(*) FROM events GROUP BY external_userid`)
	require.NoError(t, err)
	defer rows.Close()
	stored, total := map[string]int{}, 0
	for rows.Next() {
		var (
			id string
			n  int
		)
		require.NoError(t, rows.Scan(&id, &n))
		stored[id] = n
		total += n
	}
	require.NoError(t, rows.Err())
	st, err := db.Status(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, total, st.EventsReceived, "events counter agrees with the rows")
	drift, err := db.CheckTallies(t.Context())
	require.NoError(t, err)
	require.Empty(t, drift, "the status counts (tallies) agree with the rows after the kill")
	return stored
}

// TestREADMEConfigTable keeps the README's configuration table true: every
// setting is documented with its default.
func TestREADMEConfigTable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	for _, s := range settings() {
		row := "| `" + s.env + "` |"
		require.True(t, strings.Contains(string(readme), row), "README config table lacks %s", s.env)
		line := string(readme)[strings.Index(string(readme), row):]
		line = line[:strings.Index(line, "\n")]
		if s.def != "" {
			require.Contains(t, line, "`"+s.def+"`", "README default of %s", s.env)
		}
		if s.required {
			require.Contains(t, line, "required", "README must say %s is required", s.env)
		}
	}
}
