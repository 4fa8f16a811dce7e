package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/apiclient/openapitest"
	"github.com/pendinglink/pendinglink/internal/syncbuf"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// e2eTimeout bounds every wait on the asynchronous pipeline. It is an upper
// bound for a broken pipeline to fail, not an expectation: a healthy one
// settles in well under a second.
const e2eTimeout = 30 * time.Second

// e2eOptions configures one end-to-end world: a fake WeCom and a real
// pendinglink talking to it over HTTP.
type e2eOptions struct {
	// Clock drives the fake WeCom and the app. Defaults to the fake's clock.
	Clock *wecomtest.Clock
	// Faults are the fake's initial faults.
	Faults wecomtest.Faults
	// PendingQuota limits the fake's unionid_to_pending_id (zero: WeCom's).
	PendingQuota wecomtest.Quota
	// PendingForUnregistered: see wecomtest.Server.PendingForUnregistered.
	PendingForUnregistered bool
	// PendingModel is the fake's pending_id model (§9 #17).
	PendingModel wecomtest.PendingModel
	// ClockRuns moves the fake clock forward, 100 ms every 10 ms, for the
	// whole test. Tests registering more than 10 fans need it: startApp gives
	// the quota limiter the fake clock's Now but a real sleep, so once its
	// burst of 10 is spent a stopped clock never lets it pace another call.
	ClockRuns bool
	// Dealers is how many dealer corps the world has. Defaults to 1.
	Dealers int
	// Env adds or overrides configuration variables.
	Env map[string]string
	// BeforeStart runs after the fake WeCom is set up and before
	// pendinglink starts, e.g. to script faults its start-up meets.
	BeforeStart func(*wecomtest.Server)
}

// e2eWorld is a running fake WeCom plus a running pendinglink, with helpers
// to drive the one and query the other through its /v1 API. Its helpers
// fail w.t; a subtest uses w.in(t).
type e2eWorld struct {
	t       testing.TB
	wc      *wecomtest.Server
	dealers []wecomtest.Dealer
	cfg     config
	// token and aesKey are the callback settings, admin the /v1 bearer token.
	token, aesKey, admin string
	logs                 *syncbuf.Buffer
	calls                *callRecorder
	api                  *http.Client
	callbacks            *http.Client // the Senders' client
	run                  *e2eRun
}

// e2eRun is the pendinglink currently running; restart replaces it.
type e2eRun struct {
	mu     sync.Mutex
	app    *app
	base   string
	sender *wecomtest.Sender
}

// in returns the world with its helpers failing t instead, for subtests.
func (w *e2eWorld) in(t testing.TB) *e2eWorld {
	c := *w
	c.t = t
	return &c
}

// startE2E starts the fake WeCom and pendinglink on a fresh database. Both
// are closed when the test ends; the server log is printed if it failed.
func startE2E(t testing.TB, opts e2eOptions) *e2eWorld {
	t.Helper()
	wopts := []wecomtest.Option{
		wecomtest.WithFaults(opts.Faults),
		wecomtest.WithQuotas(opts.PendingQuota, wecomtest.Quota{}),
		wecomtest.WithPendingForUnregistered(opts.PendingForUnregistered),
		wecomtest.WithPendingModel(opts.PendingModel),
	}
	if opts.Clock != nil {
		wopts = append(wopts, wecomtest.WithClock(opts.Clock))
	}
	wc := wecomtest.NewUnstartedServer(wopts...)
	wc.Start()
	t.Cleanup(wc.Close) // registered first, so it runs after the app has stopped
	if opts.ClockRuns {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					wc.Clock.Advance(100 * time.Millisecond)
				}
			}
		}()
		t.Cleanup(func() { close(stop); <-done })
	}

	// Every answer the test sees, from /v1 or the callback URL, is checked
	// against the OpenAPI document.
	doc := openapitest.MustNew(t)
	w := &e2eWorld{
		t: t, wc: wc, logs: serveLog(t, 150),
		token: wecomtest.RandomToken(16), aesKey: wecomtest.RandomAESKey(), admin: wecomtest.RandomToken(32),
		api: &http.Client{Timeout: e2eTimeout, Transport: doc.Transport(t, nil)}, run: &e2eRun{},
	}
	w.calls = &callRecorder{base: wc.HTTPClient().Transport}
	w.callbacks = &http.Client{Transport: doc.Transport(t, http.DefaultTransport.(*http.Transport).Clone())}
	if opts.Dealers == 0 {
		opts.Dealers = 1
	}
	for i := range opts.Dealers {
		w.dealers = append(w.dealers, wc.AddDealer(fmt.Sprintf("dealer-%d", i+1), "staff-a", "staff-b"))
	}
	env := fakeWeComEnv(wc, w.token, w.aesKey, w.admin, filepath.Join(t.TempDir(), "e2e.db"), w.dealers)
	for k, v := range opts.Env {
		env[k] = v
	}
	cfg, err := loadConfig("e2e", nil, mapEnv(env), io.Discard)
	require.NoError(t, err)
	w.cfg = cfg

	if opts.BeforeStart != nil {
		opts.BeforeStart(wc)
	}
	w.startApp()
	t.Cleanup(w.closeApp)
	return w
}

// fakeWeComEnv is the configuration of a pendinglink that calls wc, takes
// callbacks signed with token and aesKey from the dealers, serves /v1 with
// the admin token, listens on a free port and keeps its database at dbPath.
func fakeWeComEnv(wc *wecomtest.Server, token, aesKey, admin, dbPath string, dealers []wecomtest.Dealer) map[string]string {
	corps := make([]string, len(dealers))
	for i, d := range dealers {
		corps[i] = d.CorpID
	}
	return map[string]string{
		"WECOM_CORP_ID": wc.CorpID, "WECOM_AGENT_ID": strconv.FormatInt(wc.AgentID, 10), "WECOM_CORP_SECRET": wc.CorpSecret,
		"WECOM_CALLBACK_TOKEN": token, "WECOM_CALLBACK_AES_KEY": aesKey, "WECOM_API_BASE": wc.URL,
		"WECOM_DOWNSTREAM_CORP_IDS": strings.Join(corps, ","),
		"PENDINGLINK_ADMIN_TOKEN":   admin, "PENDINGLINK_ADDR": "127.0.0.1:0", "PENDINGLINK_DB": dbPath,
		"PENDINGLINK_RESOLVE_WINDOW": "20ms", "PENDINGLINK_SHUTDOWN_TIMEOUT": "10s",
	}
}

// startApp starts pendinglink on the world's configuration and database;
// after closeApp it restarts it on the same database.
func (w *e2eWorld) startApp() {
	w.t.Helper()
	logger := slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := startApp(context.Background(), w.cfg, logger, appOptions{
		HTTPClient: &http.Client{Transport: w.calls, Timeout: 15 * time.Second},
		Now:        w.wc.Clock.Now,
	})
	require.NoError(w.t, err)
	base := "http://" + a.addr.String()
	r := w.run
	r.mu.Lock()
	r.app, r.base = a, base
	sd, err := w.wc.NewSender(wecomtest.SenderConfig{
		URL: base + w.cfg.CallbackPath, Token: w.token, EncodingAESKey: w.aesKey, HTTPClient: w.callbacks,
	})
	require.NoError(w.t, err)
	r.sender = sd
	r.mu.Unlock()
}

// closeApp stops pendinglink gracefully (as SIGTERM does). It may be called
// more than once.
func (w *e2eWorld) closeApp() {
	r := w.run
	r.mu.Lock()
	a := r.app
	r.app = nil
	r.mu.Unlock()
	if a != nil {
		// A transport may have dialled a spare connection it never used; the
		// server counts it as active for 5 s, longer than a short shutdown
		// timeout. Clients going away close theirs.
		w.api.CloseIdleConnections()
		w.callbacks.CloseIdleConnections()
		if err := a.close(); err != nil {
			w.t.Errorf("close pendinglink: %v", err)
		}
	}
}

func (w *e2eWorld) db() *store.DB {
	w.run.mu.Lock()
	defer w.run.mu.Unlock()
	return w.run.app.db
}

func (w *e2eWorld) url(path string) string {
	w.run.mu.Lock()
	defer w.run.mu.Unlock()
	return w.run.base + path
}

// --- the fake world ---

// fan adds a person to the fake WeCom (not yet registered with pendinglink).
func (w *e2eWorld) fan() wecomtest.Person { return w.wc.AddPerson() }

// addCustomer makes staff of the first dealer add p and returns the add event.
func (w *e2eWorld) addCustomer(p wecomtest.Person, staff string) (wecomtest.Customer, wecom.Event) {
	c := w.wc.AddCustomer(w.dealers[0], p, staff)
	return c, w.wc.ContactEvent(c, wecom.ChangeAddExternalContact)
}

// remove ends customer c in the fake WeCom and sends the event of
// changeType (a del_follow_user or del_external_contact) that says so.
func (w *e2eWorld) remove(c wecomtest.Customer, changeType string) {
	w.t.Helper()
	w.wc.RemoveCustomer(c)
	w.send(w.wc.ContactEvent(c, changeType))
}

// send delivers ev as WeCom does and requires the empty 200 pendinglink owes it.
func (w *e2eWorld) send(ev wecom.Event) {
	w.t.Helper()
	require.NoError(w.t, w.trySend(ev))
}

func (w *e2eWorld) trySend(ev wecom.Event) error {
	w.run.mu.Lock()
	sd := w.run.sender
	w.run.mu.Unlock()
	res, err := sd.Send(context.Background(), ev)
	switch {
	case err != nil:
		return fmt.Errorf("send %s/%s: %w", ev.ChangeType, ev.UpdateDetail, err)
	case res.Status != http.StatusOK || len(res.Body) != 0:
		return fmt.Errorf("send %s: status %d body %q", ev.ChangeType, res.Status, res.Body)
	}
	return nil
}

// sendAll delivers evs concurrently (as WeCom does) and requires every ack.
func (w *e2eWorld) sendAll(evs []wecom.Event) {
	w.t.Helper()
	errs := make([]error, len(evs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, ev := range evs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = w.trySend(ev)
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(w.t, err)
	}
}

// --- the /v1 API ---

// do calls pendinglink's API with the admin token (auth) or without, and
// returns the status and body.
func (w *e2eWorld) do(method, path string, body any, auth bool) (int, []byte) {
	w.t.Helper()
	var rd io.Reader
	if body != nil {
		if raw, ok := body.(json.RawMessage); ok {
			rd = bytes.NewReader(raw)
		} else {
			b, err := json.Marshal(body)
			require.NoError(w.t, err)
			rd = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequestWithContext(w.t.Context(), method, w.url(path), rd)
	require.NoError(w.t, err)
	if auth {
		req.Header.Set("Authorization", "Bearer "+w.admin)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := w.api.Do(req)
	require.NoError(w.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(w.t, err)
	return resp.StatusCode, b
}

// getJSON GETs path with the admin token, requires 200 and decodes into out.
func (w *e2eWorld) getJSON(path string, out any) {
	w.t.Helper()
	code, body := w.do(http.MethodGet, path, nil, true)
	require.Equal(w.t, http.StatusOK, code, "GET %s: %s", path, body)
	require.NoError(w.t, json.Unmarshal(body, out), "GET %s", path)
}

// client is the typed /v1 client of the pendinglink running now.
func (w *e2eWorld) client() *apiclient.Client {
	return &apiclient.Client{BaseURL: w.url(""), Token: w.admin, HTTPClient: w.api}
}

// registerFan POSTs /v1/fans and returns the status and the answer.
func (w *e2eWorld) registerFan(p wecomtest.Person) (int, apiclient.FanResponse) {
	w.t.Helper()
	fr, code, err := w.client().RegisterFan(w.t.Context(), store.FanInput{UnionID: p.UnionID, OpenID: p.OpenID})
	if apiclient.StatusCode(err) == 0 {
		require.NoError(w.t, err, "POST /v1/fans") // refusals are the caller's to check by code
	}
	return code, fr
}

// registerBatch POSTs /v1/fans/batch, requires 202 and returns the answer.
func (w *e2eWorld) registerBatch(ps []wecomtest.Person) apiclient.BatchResponse {
	w.t.Helper()
	in := make([]store.FanInput, len(ps))
	for i, p := range ps {
		in[i] = store.FanInput{UnionID: p.UnionID, OpenID: p.OpenID}
	}
	br, err := w.client().RegisterFans(w.t.Context(), in)
	require.NoError(w.t, err, "POST /v1/fans/batch")
	return br
}

// getFan returns GET /v1/fans/{unionid}.
func (w *e2eWorld) getFan(unionID string) apiclient.FanResponse {
	w.t.Helper()
	fr, err := w.client().Fan(w.t.Context(), unionID)
	require.NoError(w.t, err, "GET /v1/fans/%s", unionID)
	return fr
}

// customer returns GET /v1/customers/{corp}/{external_userid}, or nil on 404.
func (w *e2eWorld) customer(corpID, externalUserID string) *store.CustomerDetail {
	w.t.Helper()
	c, err := w.client().Customer(w.t.Context(), corpID, externalUserID)
	if apiclient.StatusCode(err) == http.StatusNotFound {
		return nil
	}
	require.NoError(w.t, err, "GET /v1/customers/%s/%s", corpID, externalUserID)
	return &c
}

// links pages through GET /v1/links with the given filter and returns every link.
func (w *e2eWorld) links(filter apiclient.LinkFilter) []store.Link {
	w.t.Helper()
	var all []store.Link
	filter.Limit = 1000
	for {
		page, err := w.client().Links(w.t.Context(), filter)
		require.NoError(w.t, err, "GET /v1/links")
		all = append(all, page.Links...)
		if page.NextCursor == "" {
			return all
		}
		filter.Cursor = page.NextCursor
	}
}

// linksOf returns the links of one fan.
func (w *e2eWorld) linksOf(unionID string) []store.Link {
	return w.links(apiclient.LinkFilter{UnionID: unionID})
}

// status returns GET /v1/status.
func (w *e2eWorld) status() apiclient.StatusResponse {
	w.t.Helper()
	st, err := w.client().Status(w.t.Context())
	require.NoError(w.t, err, "GET /v1/status")
	return st
}

// --- waiting ---

// waitFor polls cond every 20 ms until it holds, failing the test after
// e2eTimeout. cond runs on the test goroutine, so it may use require.
func (w *e2eWorld) waitFor(what string, cond func() bool) {
	w.t.Helper()
	w.waitForWithin(e2eTimeout, what, cond)
}

func (w *e2eWorld) waitForWithin(timeout time.Duration, what string, cond func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			st, _ := json.Marshal(w.status())
			w.t.Fatalf("timed out after %s waiting for %s; /v1/status: %s", timeout, what, st)
		}
		<-tick.C
	}
}

// waitLinks waits until the fan has n links and returns them.
func (w *e2eWorld) waitLinks(unionID string, n int) []store.Link {
	w.t.Helper()
	var ls []store.Link
	w.waitFor(fmt.Sprintf("%d link(s) of %s", n, unionID), func() bool {
		ls = w.linksOf(unionID)
		return len(ls) >= n
	})
	require.Len(w.t, ls, n, "links of %s", unionID)
	return ls
}

// waitIdle waits until no job is left and no event is pending: the
// pipeline has done everything it was given.
func (w *e2eWorld) waitIdle() apiclient.StatusResponse {
	w.t.Helper()
	var st apiclient.StatusResponse
	w.waitFor("an idle pipeline", func() bool {
		st = w.status()
		return st.Queue.Pending == 0 && st.Events.Pending == 0
	})
	return st
}

// jobs lists River jobs of a kind in the given states (none: every state).
func (w *e2eWorld) jobs(kind string, states ...rivertype.JobState) []*rivertype.JobRow {
	w.t.Helper()
	params := river.NewJobListParams().Kinds(kind).First(10_000)
	if len(states) > 0 {
		params = params.States(states...)
	} else {
		params = params.States(rivertype.JobStateAvailable, rivertype.JobStateCancelled, rivertype.JobStateCompleted,
			rivertype.JobStateDiscarded, rivertype.JobStatePending, rivertype.JobStateRetryable, rivertype.JobStateRunning,
			rivertype.JobStateScheduled)
	}
	res, err := w.db().River().JobList(w.t.Context(), params)
	require.NoError(w.t, err)
	return res.Jobs
}

// queued lists the registration queue's unionids, head first.
func (w *e2eWorld) queued() []string {
	w.t.Helper()
	fans, err := w.db().NextFans(w.t.Context(), 100)
	require.NoError(w.t, err)
	var out []string
	for _, f := range fans {
		out = append(out, f.UnionID)
	}
	return out
}

// --- recorders ---

// batchBody is one batch/external_userid_to_pending_id request as sent.
type batchBody struct {
	ChatID         string   `json:"chat_id"`
	ExternalUserID []string `json:"external_userid"`
}

// callRecorder is the app's transport to the fake WeCom. It keeps the body
// of every batch/external_userid_to_pending_id request and the unionid of
// every unionid_to_pending_id request, so tests can see what was asked.
type callRecorder struct {
	base     http.RoundTripper
	mu       sync.Mutex
	batches  []batchBody
	register []string // unionids, one per request (retries included)
	// hold, when set, makes every batch call block until it is closed,
	// ignoring the request's context: WeCom hanging past every timeout.
	hold, held chan struct{}
}

// holdBatches makes batch calls hang from now on. held is closed when the
// first one hangs; release lets them all go.
func (r *callRecorder) holdBatches() (held <-chan struct{}, release func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hold, r.held = make(chan struct{}), make(chan struct{})
	hold := r.hold
	return r.held, sync.OnceFunc(func() { close(hold) })
}

// RoundTrip implements http.RoundTripper.
func (r *callRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	api, _ := strings.CutPrefix(req.URL.Path, wecomtest.PathPrefix)
	if (api == wecomtest.APIExternalUserIDToPendingID || api == wecomtest.APIUnionIDToPendingID) && req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		if api == wecomtest.APIExternalUserIDToPendingID {
			var bb batchBody
			if json.Unmarshal(b, &bb) == nil {
				r.batches = append(r.batches, bb)
			}
			if hold, held := r.hold, r.held; hold != nil {
				r.mu.Unlock()
				select {
				case <-held:
				default:
					close(held)
				}
				<-hold
				r.mu.Lock()
			}
		} else {
			var f store.FanInput
			if json.Unmarshal(b, &f) == nil {
				r.register = append(r.register, f.UnionID)
			}
		}
		r.mu.Unlock()
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	return r.base.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the base transport.
func (r *callRecorder) CloseIdleConnections() {
	if c, ok := r.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// batchRequests returns every batch request sent so far.
func (r *callRecorder) batchRequests() []batchBody {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]batchBody(nil), r.batches...)
}

// registrations counts the unionid_to_pending_id requests sent for unionID.
func (r *callRecorder) registrations(unionID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, u := range r.register {
		if u == unionID {
			n++
		}
	}
	return n
}

// burst registers nFans new fans in one batch and waits for WeCom to know
// them, then makes nFans+nOthers new customers of the first dealer (the
// fans first, then people who are not fans), customer i followed by
// staff(i). It returns the linkKeys the fans' customers should be linked
// under, and the customers' add events, unsent.
func (w *e2eWorld) burst(nFans, nOthers int, staff func(i int) string) (want map[string]bool, evs []wecom.Event) {
	w.t.Helper()
	var fans []wecomtest.Person
	for range nFans {
		fans = append(fans, w.fan())
	}
	w.registerBatch(fans)
	w.waitFor("every fan registered", func() bool { return w.status().Fans.Registered == int64(nFans) })

	want = map[string]bool{}
	for i := range nFans + nOthers {
		p := w.fan()
		if i < nFans {
			p = fans[i]
		}
		c, ev := w.addCustomer(p, staff(i))
		evs = append(evs, ev)
		if i < nFans {
			want[p.UnionID+"|"+c.Dealer.CorpID+"|"+c.ExternalUserID] = true
		}
	}
	return want, evs
}

// requireLinks requires the app to hold exactly the links want names (by
// linkKey), each once.
func (w *e2eWorld) requireLinks(want map[string]bool) {
	w.t.Helper()
	got := map[string]bool{}
	for _, l := range w.links(apiclient.LinkFilter{}) {
		require.False(w.t, got[linkKey(l)], "duplicate link %s", linkKey(l))
		got[linkKey(l)] = true
	}
	require.Equal(w.t, want, got)
}

// waitResolution waits for c to have one resolution and returns c as the
// app reports it.
func (w *e2eWorld) waitResolution(c wecomtest.Customer) *store.CustomerDetail {
	w.t.Helper()
	var cust *store.CustomerDetail
	w.waitFor("the customer's resolution", func() bool {
		cust = w.customer(c.Dealer.CorpID, c.ExternalUserID)
		return cust != nil && len(cust.Resolutions) == 1
	})
	return cust
}

// linkKey identifies a link: one per fan, corp and customer.
func linkKey(l store.Link) string { return l.UnionID + "|" + l.CorpID + "|" + l.ExternalUserID }
