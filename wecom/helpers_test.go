package wecom_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/internal/fakeclock"
	"github.com/pendinglink/pendinglink/internal/syncbuf"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/wecom"
)

const (
	testCorpID  = "wwtestupstream"
	testAgentID = int64(1000002)
	testSecret  = "test-secret-DO-NOT-LOG"
)

// newFakeClock returns the clock for token expiry and quota windows,
// starting at 2025-03-01 10:00 UTC.
func newFakeClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC))
}

// apiRequest is one request the test server received.
type apiRequest struct {
	N     int // 1-based call number of this API
	Query url.Values
	Body  map[string]any
	Token string
}

// handlerFunc answers one request: it returns the JSON to send, or nil
// after writing the response itself.
type handlerFunc func(w http.ResponseWriter, req apiRequest) any

// testBundle is a WeCom stand-in written for these tests: each API path has
// a handler; gettoken issues tok-1, tok-2, … by default.
type testBundle struct {
	clock  *fakeclock.Clock
	srv    *httptest.Server
	client *wecom.Client
	logs   *syncbuf.Buffer

	mu       sync.Mutex
	handlers map[string]handlerFunc
	reqs     map[string][]apiRequest
	sleeps   []time.Duration
}

func setup(t testing.TB, mods ...func(*wecom.Config)) *testBundle {
	t.Helper()
	tb := &testBundle{
		clock:    newFakeClock(),
		logs:     &syncbuf.Buffer{},
		handlers: map[string]handlerFunc{},
		reqs:     map[string][]apiRequest{},
	}
	tb.handle(wecom.APIGetToken, func(_ http.ResponseWriter, req apiRequest) any {
		return map[string]any{"errcode": 0, "errmsg": "ok", "access_token": fmt.Sprintf("tok-%d", req.N), "expires_in": 7200}
	})
	tb.srv = httptest.NewServer(http.HandlerFunc(tb.serve))
	t.Cleanup(tb.srv.Close)
	cfg := wecom.Config{
		BaseURL:    tb.srv.URL,
		CorpID:     testCorpID,
		AgentID:    testAgentID,
		CorpSecret: testSecret,
		Now:        tb.clock.Now,
		Logger:     slog.New(slog.NewTextHandler(tb.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Sleep: func(ctx context.Context, d time.Duration) error {
			tb.mu.Lock()
			tb.sleeps = append(tb.sleeps, d)
			tb.mu.Unlock()
			return ctx.Err()
		},
	}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := wecom.NewClient(cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	tb.client = c
	return tb
}

func (tb *testBundle) handle(api string, h handlerFunc) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.handlers[api] = h
}

func (tb *testBundle) serve(w http.ResponseWriter, r *http.Request) {
	api := strings.TrimPrefix(r.URL.Path, "/cgi-bin/")
	raw, _ := io.ReadAll(r.Body)
	req := apiRequest{Query: r.URL.Query(), Token: r.URL.Query().Get("access_token")}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &req.Body); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
	}
	tb.mu.Lock()
	req.N = len(tb.reqs[api]) + 1
	tb.reqs[api] = append(tb.reqs[api], req)
	h := tb.handlers[api]
	tb.mu.Unlock()
	if h == nil {
		http.NotFound(w, r)
		return
	}
	if v := h(w, req); v != nil {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
}

// calls returns how many requests api received.
func (tb *testBundle) calls(api string) int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return len(tb.reqs[api])
}

func (tb *testBundle) requests(api string) []apiRequest {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]apiRequest(nil), tb.reqs[api]...)
}

func (tb *testBundle) sleepDurations() []time.Duration {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]time.Duration(nil), tb.sleeps...)
}

// ok answers success with extra fields.
func ok(kv ...any) map[string]any {
	m := map[string]any{"errcode": 0, "errmsg": "ok"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func fail(code int, msg string) map[string]any {
	return map[string]any{"errcode": code, "errmsg": msg}
}

// rejectLater answers errcode code (a rejected token) after moving the
// clock a minute on, as if WeCom had revoked the token a while after
// issuing it: a token rejected at once is too young to refetch
// (Config.TokenRefreshInterval).
func (tb *testBundle) rejectLater(code int) any {
	tb.clock.Advance(time.Minute)
	return fail(code, "token rejected")
}

// dropConnection closes the connection without an answer.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

// pendingOK answers unionid_to_pending_id with a pending_id derived from the unionid.
func pendingOK(_ http.ResponseWriter, req apiRequest) any {
	return ok("pending_id", "p-"+req.Body["unionid"].(string))
}

// errClass is what the exported predicates say about an error. Comparing
// whole values asserts every predicate at once, including the false ones.
type errClass struct{ retryable, rateLimited, tokenInvalid, permanent, notCustomerYet bool }

func classify(err error) errClass {
	return errClass{
		retryable:      wecom.IsRetryable(err),
		rateLimited:    wecom.IsRateLimited(err),
		tokenInvalid:   wecom.IsTokenInvalid(err),
		permanent:      wecom.IsPermanent(err),
		notCustomerYet: wecom.IsNotCustomerYet(err),
	}
}

// always answers every request with errcode code.
func always(code int, msg string) handlerFunc {
	return func(http.ResponseWriter, apiRequest) any { return fail(code, msg) }
}

// httpStatus answers every request with a bare HTTP error status.
func httpStatus(code int) handlerFunc {
	return func(w http.ResponseWriter, _ apiRequest) any {
		http.Error(w, http.StatusText(code), code)
		return nil
	}
}

// hangUp drops every connection without an answer.
func hangUp(w http.ResponseWriter, _ apiRequest) any {
	dropConnection(w)
	return nil
}

// firstThen answers the first n requests with first, the rest with then.
func firstThen(n int, first, then handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, req apiRequest) any {
		if req.N <= n {
			return first(w, req)
		}
		return then(w, req)
	}
}

// setupPending is setup with h answering unionid_to_pending_id.
func setupPending(t testing.TB, h handlerFunc, mods ...func(*wecom.Config)) *testBundle {
	t.Helper()
	tb := setup(t, mods...)
	tb.handle(wecom.APIUnionIDToPendingID, h)
	return tb
}

// callPending is the UnionIDToPendingID call most tests make.
func (tb *testBundle) callPending(ctx context.Context) (string, error) {
	return tb.client.UnionIDToPendingID(ctx, "test-union", "test-open")
}

// newLimiter builds a quota limiter from cfg, failing the test on error.
func newLimiter(t testing.TB, cfg quota.Config) *quota.Limiter {
	t.Helper()
	lim, err := quota.New(context.Background(), cfg)
	require.NoError(t, err)
	return lim
}

// answerWith answers every request the way that produces err: an errcode
// for an *wecom.APIError, a bare HTTP status for an *wecom.HTTPStatusError.
func answerWith(err error) handlerFunc {
	switch e := err.(type) {
	case *wecom.APIError:
		return always(e.Code, e.Msg)
	case *wecom.HTTPStatusError:
		return httpStatus(e.StatusCode)
	}
	panic(fmt.Sprintf("answerWith: unsupported error %T", err))
}

// answer makes api always succeed with the extra fields kv (as for ok).
func (tb *testBundle) answer(api string, kv ...any) {
	tb.handle(api, func(http.ResponseWriter, apiRequest) any { return ok(kv...) })
}
