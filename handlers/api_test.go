package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/pipeline/pipelinetest"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
	"github.com/pendinglink/pendinglink/wecom"
)

// apiNow is the fixed time of the API tests' store and pipeline.
var apiNow = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// apiBundle is a server with the pipeline routes on a real store.
type apiBundle struct {
	db     *store.DB
	wecom  *pipelinetest.FakeWeCom
	server *handlers.Server
	srv    *httptest.Server
	// client checks every exchange against the OpenAPI document.
	client *http.Client
}

type apiOpts struct {
	wecom *pipelinetest.FakeWeCom
	quota *pipelinetest.FakeQuota
	// now is the clock of the store, the pipeline and the handlers;
	// defaults to apiNow, fixed.
	now func() time.Time
	// open opens the store; defaults to storetest.MustOpen (SQLite).
	open func(testing.TB, store.Config) *store.DB
}

func setupAPI(t *testing.T, opts apiOpts) *apiBundle {
	t.Helper()
	return setupAPIConfig(t, opts, nil)
}

// setupAPIConfig is setupAPI with a last say on the handlers' Config.
func setupAPIConfig(t *testing.T, opts apiOpts, edit func(*handlers.Config)) *apiBundle {
	t.Helper()
	now := opts.now
	if now == nil {
		now = func() time.Time { return apiNow }
	}
	if opts.open == nil {
		opts.open = storetest.MustOpen
	}
	db := opts.open(t, store.Config{Now: now, Jobs: pipeline.Policy{}})
	if opts.wecom == nil {
		opts.wecom = &pipelinetest.FakeWeCom{}
	}
	co, err := pipeline.NewCoalescer(opts.wecom, pipeline.CoalescerConfig{})
	require.NoError(t, err)
	t.Cleanup(co.Close)
	pcfg := pipeline.Config{Store: db, WeCom: opts.wecom, Coalescer: co, Now: now}
	if opts.quota != nil {
		pcfg.Quota = opts.quota
	}
	pl, err := pipeline.New(pcfg)
	require.NoError(t, err)
	cfg := testConfig(t, db, handlers.ReceiveIDAllowlist, prometheus.NewRegistry())
	cfg.Now, cfg.WeCom, cfg.Pipeline = now, opts.wecom, pl
	if opts.quota != nil {
		cfg.Quota = opts.quota
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := handlers.New(cfg)
	require.NoError(t, err)
	srv, client := serve(t, s)
	return &apiBundle{db: db, wecom: opts.wecom, server: s, srv: srv, client: client}
}

// do sends an authorised request and returns the status and body.
func (b *apiBundle) do(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(v)
	default:
		raw, err := json.Marshal(v)
		require.NoError(t, err)
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, b.srv.URL+path, r)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, out
}

// decodeAs decodes a JSON body into a fresh T.
func decodeAs[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(body, &v), string(body))
	return v
}

// doAs does a request (see do), requires the status want and decodes the
// body into a fresh T.
func doAs[T any](t *testing.T, b *apiBundle, want int, method, path string, body any) T {
	t.Helper()
	code, got := b.do(t, method, path, body)
	require.Equal(t, want, code, string(got))
	return decodeAs[T](t, got)
}

// errorBody returns the "error" of a JSON error body.
func errorBody(t *testing.T, body []byte) string {
	t.Helper()
	return decodeAs[map[string]string](t, body)["error"]
}

func (b *apiBundle) count(t *testing.T, query string) int64 {
	t.Helper()
	var n int64
	require.NoError(t, b.db.SQL().QueryRowContext(t.Context(), query).Scan(&n))
	return n
}

// registerFails is a WeCom whose unionid_to_pending_id answers errcode code.
func registerFails(code int, msg string) *pipelinetest.FakeWeCom {
	return &pipelinetest.FakeWeCom{UnionIDToPendingIDFunc: func(context.Context, string, string) (string, error) {
		return "", &wecom.APIError{API: "corpgroup/unionid_to_pending_id", Code: code, Msg: msg}
	}}
}

func TestAPI_RegisterFan(t *testing.T) {
	t.Parallel()
	fan := store.FanInput{UnionID: "test-u1", OpenID: "o-test-u1"}

	t.Run("CreatedWhenWeComAnswers", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{wecom: &pipelinetest.FakeWeCom{UnionIDToPendingIDFunc: pipelinetest.PendingIDs("p-1")}})
		code, body := b.do(t, http.MethodPost, "/v1/fans", fan)
		require.Equal(t, http.StatusCreated, code, string(body))
		got := decodeAs[map[string]any](t, body)
		require.Equal(t, "test-u1", got["unionid"])
		require.Equal(t, "o-test-u1", got["openid"])
		require.Equal(t, store.FanRegistered, got["state"])
		require.Equal(t, "p-1", got["pending_id"])
		require.NotContains(t, got, "queued")
		require.Equal(t, []string{"unionid_to_pending_id test-u1 o-test-u1"}, b.wecom.Calls())
		require.Zero(t, b.count(t, `SELECT count(*) FROM river_job`), "nothing left to do")
	})

	t.Run("CreatedLinksCustomerResolvedEarlier", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{wecom: &pipelinetest.FakeWeCom{UnionIDToPendingIDFunc: pipelinetest.PendingIDs("p-1")}})
		storetest.Resolve(t, b.db, store.Resolution{CorpID: testDealerCorp, ExternalUserID: "wmtest1", PendingID: "p-1"})
		got := doAs[store.FanDetail](t, b, http.StatusCreated, http.MethodPost, "/v1/fans", fan)
		require.Len(t, got.Links, 1)
		require.Equal(t, "wmtest1", got.Links[0].ExternalUserID)
		require.True(t, got.Links[0].Active)
	})

	t.Run("OKWhenAlreadyRegistered", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{wecom: &pipelinetest.FakeWeCom{UnionIDToPendingIDFunc: pipelinetest.PendingIDs("p-1")}})
		code, _ := b.do(t, http.MethodPost, "/v1/fans", fan)
		require.Equal(t, http.StatusCreated, code)
		code, body := b.do(t, http.MethodPost, "/v1/fans", fan)
		require.Equal(t, http.StatusOK, code, string(body))
		require.Equal(t, "p-1", decodeAs[store.FanDetail](t, body).PendingID)
		require.Len(t, b.wecom.Calls(), 1, "a live pending_id is not asked for again")
	})

	// queued asserts a 202 with the fan at the head of the registration
	// queue, as interactive.
	queued := func(t *testing.T, b *apiBundle, code int, body []byte) {
		t.Helper()
		require.Equal(t, http.StatusAccepted, code, string(body))
		got := decodeAs[map[string]any](t, body)
		require.Equal(t, true, got["queued"])
		require.Equal(t, store.FanNew, got["state"])
		require.NotContains(t, got, "pending_id")
		next := storetest.MustQueue(t, b.db, 2)
		require.Len(t, next, 1)
		require.Equal(t, "test-u1", next[0].UnionID)
		require.Equal(t, store.QueueInteractive, next[0].Class)
	}

	t.Run("AcceptedWhenWeComBusy", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{wecom: registerFails(wecom.CodeSystemBusy, "system busy")})
		code, body := b.do(t, http.MethodPost, "/v1/fans", fan)
		queued(t, b, code, body)
		require.Len(t, b.wecom.Calls(), 1)
	})

	t.Run("AcceptedWhenWeComRateLimits", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{wecom: registerFails(wecom.CodeAPIFreqOutOfLimit, "api freq out of limit")})
		code, body := b.do(t, http.MethodPost, "/v1/fans", fan)
		queued(t, b, code, body)
	})

	t.Run("AcceptedWithoutCallWhenQuotaNotFree", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{quota: &pipelinetest.FakeQuota{Next: apiNow.Add(time.Minute)}})
		code, body := b.do(t, http.MethodPost, "/v1/fans", fan)
		queued(t, b, code, body)
		require.Empty(t, b.wecom.Calls())
	})

	t.Run("CreatedWhenQuotaFree", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{
			wecom: &pipelinetest.FakeWeCom{UnionIDToPendingIDFunc: pipelinetest.PendingIDs("p-1")},
			quota: &pipelinetest.FakeQuota{Next: apiNow},
		})
		code, body := b.do(t, http.MethodPost, "/v1/fans", fan)
		require.Equal(t, http.StatusCreated, code, string(body))
	})

	t.Run("UnprocessableWhenWeComRefuses", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{wecom: registerFails(610014, "invalid unionid")})
		code, body := b.do(t, http.MethodPost, "/v1/fans", fan)
		require.Equal(t, http.StatusUnprocessableEntity, code, string(body))
		msg := errorBody(t, body)
		require.Contains(t, msg, "610014")
		require.Contains(t, msg, "WeCom refused")
		require.Zero(t, b.count(t, `SELECT count(*) FROM river_job`), "a permanent error is not queued")
		got, err := b.db.FindFan(t.Context(), "test-u1")
		require.NoError(t, err)
		require.Equal(t, store.FanFailed, got.State)
		require.Contains(t, got.LastError, "610014")
	})

	t.Run("BadRequest", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{})
		for name, body := range map[string]string{
			"NotJSON":       `unionid=x`,
			"UnknownField":  `{"unionid":"test-u1","openid":"o","extra":1}`,
			"MissingOpenID": `{"unionid":"test-u1"}`,
			"TooLong":       `{"unionid":"` + strings.Repeat("u", 129) + `","openid":"o"}`,
			// WeChat ids are printable ASCII; anything else must not reach WeCom.
			"NULInUnionID":        `{"unionid":"test-u1\u0000","openid":"o"}`,
			"InvalidUTF8InOpenID": "{\"unionid\":\"test-u1\",\"openid\":\"o\xff\"}",
			"ControlInOpenID":     `{"unionid":"test-u1","openid":"o\n"}`,
			// One body, one JSON value: a second one would be silently dropped.
			"TrailingObject":  `{"unionid":"test-u1","openid":"o"}{"unionid":"test-u2","openid":"o"}`,
			"TrailingGarbage": `{"unionid":"test-u1","openid":"o"} x`,
		} {
			code, resp := b.do(t, http.MethodPost, "/v1/fans", body)
			require.Equal(t, http.StatusBadRequest, code, name)
			require.NotEmpty(t, errorBody(t, resp), name)
		}
		code, _ := b.do(t, http.MethodPost, "/v1/fans", `{"unionid":"test-u1","openid":"o"}`+" \n")
		require.Equal(t, http.StatusAccepted, code, "trailing whitespace is fine")
		require.EqualValues(t, 1, b.count(t, `SELECT count(*) FROM fans`))
	})

	t.Run("TooLarge", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{})
		for _, path := range []string{"/v1/fans", "/v1/fans/batch"} {
			code, resp := b.do(t, http.MethodPost, path, `{"unionid":"`+strings.Repeat("u", 2<<20)+`","openid":"o"}`)
			require.Equal(t, http.StatusRequestEntityTooLarge, code, path)
			require.NotEmpty(t, errorBody(t, resp), path)
		}
		require.Zero(t, b.count(t, `SELECT count(*) FROM fans`))
	})
}

// registerFan stores a fan holding live pendingID, as if it had been
// registered before.
func registerFan(t *testing.T, b *apiBundle, unionID, openID, pendingID string) {
	t.Helper()
	_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: unionID, OpenID: openID}}, store.RegisterOpts{NoJob: true})
	require.NoError(t, err)
	_, err = b.db.RecordFanPendingID(t.Context(), unionID, pendingID)
	require.NoError(t, err)
}

func TestAPI_RegisterFans(t *testing.T) {
	t.Parallel()

	fans := func(n int) []store.FanInput {
		out := make([]store.FanInput, n)
		for i := range out {
			out[i] = store.FanInput{UnionID: fmt.Sprintf("test-u%d", i), OpenID: fmt.Sprintf("o-%d", i)}
		}
		return out
	}

	t.Run("CountsQueuedAndSkipped", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{})
		// test-u0 already holds a live pending_id.
		registerFan(t, b, "test-u0", "o-0", "p-0")

		code, body := b.do(t, http.MethodPost, "/v1/fans/batch", fans(3))
		require.Equal(t, http.StatusAccepted, code, string(body))
		require.Equal(t, apiclient.BatchResponse{Accepted: 3, Queued: 2, Skipped: 1}, decodeAs[apiclient.BatchResponse](t, body))
		queued, err := b.db.QueuedFans(t.Context())
		require.NoError(t, err)
		require.Equal(t, map[int]int64{store.QueueBulk: 2}, queued, "two fans in the queue, as bulk")

		code, body = b.do(t, http.MethodPost, "/v1/fans/batch", fans(3))
		require.Equal(t, http.StatusAccepted, code)
		require.Equal(t, apiclient.BatchResponse{Accepted: 3, Queued: 0, Skipped: 3}, decodeAs[apiclient.BatchResponse](t, body),
			"re-sending a batch queues nothing twice")
		require.Empty(t, b.wecom.Calls(), "a batch never calls WeCom inline")
	})

	t.Run("AcceptsMaxFans", func(t *testing.T) {
		t.Parallel()
		// The same registered fan MaxFansPerBatch times: the limit is
		// inclusive, and skipping keeps the test fast (a register job insert
		// costs milliseconds under -race).
		b := setupAPI(t, apiOpts{})
		registerFan(t, b, "test-u0", "o-0", "p-0")
		same := make([]store.FanInput, apiclient.MaxFansPerBatch)
		for i := range same {
			same[i] = fans(1)[0]
		}
		code, body := b.do(t, http.MethodPost, "/v1/fans/batch", same)
		require.Equal(t, http.StatusAccepted, code, string(body))
		require.Equal(t, apiclient.BatchResponse{Accepted: apiclient.MaxFansPerBatch, Skipped: apiclient.MaxFansPerBatch},
			decodeAs[apiclient.BatchResponse](t, body))
	})

	t.Run("BadRequest", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{})
		invalid := fans(3)
		invalid[1].OpenID = ""
		for name, tc := range map[string]struct {
			body any
			msg  string
		}{
			"Empty":      {[]store.FanInput{}, "between 1 and 1000"},
			"TooMany":    {fans(apiclient.MaxFansPerBatch + 1), "between 1 and 1000"},
			"InvalidFan": {invalid, "fan 1"},
			"NotAnArray": {`{"unionid":"test-u1","openid":"o"}`, "invalid JSON"},
		} {
			code, body := b.do(t, http.MethodPost, "/v1/fans/batch", tc.body)
			require.Equal(t, http.StatusBadRequest, code, name)
			require.Contains(t, errorBody(t, body), tc.msg, name)
		}
		require.Zero(t, b.count(t, `SELECT count(*) FROM fans`))
		require.Zero(t, b.count(t, `SELECT count(*) FROM river_job`))
	})
}

// TestAPI_FanLastActive: a fan's last-active time is given to POST
// /v1/fans and /v1/fans/batch, changed with PATCH, returned by GET, and
// orders the queue within a priority.
func TestAPI_FanLastActive(t *testing.T) {
	t.Parallel()
	queue := func(t *testing.T, b *apiBundle) []string {
		t.Helper()
		return storetest.QueuedUnionIDs(t, b.db, 10)
	}

	t.Run("GivenChangedShown", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{wecom: &pipelinetest.FakeWeCom{UnionIDToPendingIDFunc: pipelinetest.PendingIDs("p-1")}})
		code, body := b.do(t, http.MethodPost, "/v1/fans", `{"unionid":"test-u1","openid":"o-1","last_active_at":"2026-02-28T22:30:00+08:00"}`)
		require.Equal(t, http.StatusCreated, code, string(body))
		require.Equal(t, "2026-02-28T14:30:00Z", decodeAs[map[string]any](t, body)["last_active_at"], "in UTC")

		code, body = b.do(t, http.MethodPost, "/v1/fans/batch", `[{"unionid":"test-idle","openid":"o"},
			{"unionid":"test-active","openid":"o","last_active_at":"2026-02-27T10:00:00Z"},
			{"unionid":"test-ahead","openid":"o","last_active_at":"2026-03-01T08:01:00Z"}]`)
		require.Equal(t, http.StatusAccepted, code, string(body))
		require.Equal(t, []string{"test-ahead", "test-active", "test-idle"}, queue(t, b), "a clock a minute ahead is tolerated")

		got := doAs[store.FanDetail](t, b, http.StatusOK, http.MethodPatch, "/v1/fans/test-idle", `{"last_active_at":"2026-02-28T07:00:00Z"}`)
		require.True(t, got.LastActiveAt.Equal(time.Date(2026, 2, 28, 7, 0, 0, 0, time.UTC)))
		require.Equal(t, store.DefaultFanPriority, got.Priority, "the priority is kept")
		require.Equal(t, []string{"test-ahead", "test-idle", "test-active"}, queue(t, b), "moved up at once")

		code, body = b.do(t, http.MethodPatch, "/v1/fans/test-idle", `{"priority":90,"last_active_at":"2026-01-01T00:00:00Z"}`)
		require.Equal(t, http.StatusOK, code, string(body))
		got = doAs[store.FanDetail](t, b, http.StatusOK, http.MethodGet, "/v1/fans/test-idle", nil)
		require.Equal(t, 90, got.Priority)
		require.True(t, got.LastActiveAt.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), "PATCH sets an older time too")

		code, body = b.do(t, http.MethodGet, "/v1/fans/test-active", nil)
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "2026-02-27T10:00:00Z", decodeAs[map[string]any](t, body)["last_active_at"])
	})

	t.Run("BadRequest", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{})
		registerFan(t, b, "test-u1", "o-1", "p-1")
		future := apiNow.Add(store.MaxClockSkew + time.Second).Format(time.RFC3339)
		for name, tc := range map[string]struct {
			method, path, body, msg string
		}{
			"NotATime":        {http.MethodPost, "/v1/fans", `{"unionid":"test-u2","openid":"o","last_active_at":"yesterday"}`, "RFC 3339"},
			"NotAString":      {http.MethodPost, "/v1/fans", `{"unionid":"test-u2","openid":"o","last_active_at":1700000000}`, "invalid JSON"},
			"Future":          {http.MethodPost, "/v1/fans", `{"unionid":"test-u2","openid":"o","last_active_at":"` + future + `"}`, "last_active_at"},
			"BatchNotATime":   {http.MethodPost, "/v1/fans/batch", `[{"unionid":"test-u2","openid":"o","last_active_at":"2026-02-30"}]`, "RFC 3339"},
			"BatchFuture":     {http.MethodPost, "/v1/fans/batch", `[{"unionid":"test-u2","openid":"o","last_active_at":"` + future + `"}]`, "fan 0: store: invalid: last_active_at"},
			"PatchNotATime":   {http.MethodPatch, "/v1/fans/test-u1", `{"last_active_at":"soon"}`, "RFC 3339"},
			"PatchFuture":     {http.MethodPatch, "/v1/fans/test-u1", `{"last_active_at":"` + future + `"}`, "last_active_at"},
			"PatchNothing":    {http.MethodPatch, "/v1/fans/test-u1", `{}`, "priority"},
			"PatchBefore1970": {http.MethodPatch, "/v1/fans/test-u1", `{"last_active_at":"1969-12-31T00:00:00Z"}`, "last_active_at"},
		} {
			code, body := b.do(t, tc.method, tc.path, tc.body)
			require.Equal(t, http.StatusBadRequest, code, name)
			require.Contains(t, errorBody(t, body), tc.msg, name)
		}
		require.Equal(t, int64(1), b.count(t, `SELECT count(*) FROM fans`), "no fan stored")
		require.Zero(t, b.count(t, `SELECT count(*) FROM fans WHERE last_active_at IS NOT NULL`), "nothing changed")
	})
}

func TestAPI_GetFan(t *testing.T) {
	t.Parallel()

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{})
		code, body := b.do(t, http.MethodGet, "/v1/fans/test-nobody", nil)
		require.Equal(t, http.StatusNotFound, code)
		require.Equal(t, "not found", errorBody(t, body))
	})

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, apiOpts{})
		registerFan(t, b, "test-u1", "o-1", "p-1")
		got := doAs[store.FanDetail](t, b, http.StatusOK, http.MethodGet, "/v1/fans/test-u1", nil)
		require.Equal(t, "test-u1", got.UnionID)
		require.Equal(t, "p-1", got.PendingID)
		require.Len(t, got.PendingIDs, 1)
		require.True(t, got.ExpiresAt.Equal(apiNow.Add(store.PendingIDLifetime)))
		require.NotNil(t, got.Links)
	})
}

func TestAPI_FindLinks(t *testing.T) {
	t.Parallel()

	b := setupAPI(t, apiOpts{})
	// Three links of test-u1, in three corps.
	registerFan(t, b, "test-u1", "o-1", "p-1")
	for _, corp := range []string{"wwtestc1", "wwtestc2", "wwtestc3"} {
		storetest.Resolve(t, b.db, store.Resolution{CorpID: corp, ExternalUserID: "wm-" + corp, PendingID: "p-1"})
	}
	corps := func(r apiclient.LinksResponse) []string {
		var out []string
		for _, l := range r.Links {
			out = append(out, l.CorpID)
		}
		return out
	}

	t.Run("BadRequest", func(t *testing.T) {
		t.Parallel()
		for query, param := range map[string]string{
			"since=yesterday":  "since",
			"since=2026-01-02": "since",
			"limit=0":          "limit",
			"limit=1001":       "limit",
			"limit=ten":        "limit",
			"cursor=0":         "cursor",
			"cursor=-5":        "cursor",
			"cursor=abc":       "cursor",
		} {
			code, body := b.do(t, http.MethodGet, "/v1/links?"+query, nil)
			require.Equal(t, http.StatusBadRequest, code, query)
			require.True(t, strings.HasPrefix(errorBody(t, body), param+":"), "%s: %s", query, body)
		}
	})

	t.Run("PagesNewestFirst", func(t *testing.T) {
		t.Parallel()
		page1 := doAs[apiclient.LinksResponse](t, b, http.StatusOK, http.MethodGet, "/v1/links?limit=2", nil)
		require.Equal(t, []string{"wwtestc3", "wwtestc2"}, corps(page1))
		require.NotEmpty(t, page1.NextCursor)

		page2 := doAs[apiclient.LinksResponse](t, b, http.StatusOK, http.MethodGet, "/v1/links?limit=2&cursor="+page1.NextCursor, nil)
		require.Equal(t, []string{"wwtestc1"}, corps(page2))
		require.Empty(t, page2.NextCursor, "a short page is the last")
	})

	t.Run("Filters", func(t *testing.T) {
		t.Parallel()
		for query, want := range map[string][]string{
			"corp_id=wwtestc2":                                      {"wwtestc2"},
			"external_userid=wm-wwtestc1":                           {"wwtestc1"},
			"unionid=test-u1":                                       {"wwtestc3", "wwtestc2", "wwtestc1"},
			"since=" + apiNow.Format(time.RFC3339):                  {"wwtestc3", "wwtestc2", "wwtestc1"},
			"since=" + apiNow.Add(time.Second).Format(time.RFC3339): nil,
		} {
			code, body := b.do(t, http.MethodGet, "/v1/links?"+query, nil)
			require.Equal(t, http.StatusOK, code, query)
			require.Equal(t, want, corps(decodeAs[apiclient.LinksResponse](t, body)), query)
		}
	})

	t.Run("EmptyIsAnArray", func(t *testing.T) {
		t.Parallel()
		code, body := b.do(t, http.MethodGet, "/v1/links?unionid=test-nobody", nil)
		require.Equal(t, http.StatusOK, code)
		require.JSONEq(t, `{"links":[]}`, string(body))
	})
}

func TestAPI_GetCustomer(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, apiOpts{})

	code, body := b.do(t, http.MethodGet, "/v1/customers/"+testDealerCorp+"/wmtest1", nil)
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, "not found", errorBody(t, body))

	storetest.Resolve(t, b.db, store.Resolution{CorpID: testDealerCorp, ExternalUserID: "wmtest1", PendingID: "p-1"})
	got := doAs[store.CustomerDetail](t, b, http.StatusOK, http.MethodGet, "/v1/customers/"+testDealerCorp+"/wmtest1", nil)
	require.Equal(t, testDealerCorp, got.CorpID)
	require.Equal(t, "wmtest1", got.ExternalUserID)
	require.Len(t, got.Resolutions, 1)
	require.Equal(t, "p-1", got.Resolutions[0].PendingID)
	require.Equal(t, store.ResolutionResolved, got.Resolutions[0].State)
	require.Empty(t, got.Links)
}

func TestAPI_RequiresToken(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, apiOpts{})
	for _, route := range []struct{ method, path string }{
		{http.MethodGet, "/v1/status"},
		{http.MethodPost, "/v1/fans"},
		{http.MethodPost, "/v1/fans/batch"},
		{http.MethodGet, "/v1/fans/test-u1"},
		{http.MethodGet, "/v1/links"},
		{http.MethodGet, "/v1/customers/" + testDealerCorp + "/wmtest1"},
	} {
		for name, header := range map[string]string{"Missing": "", "Wrong": "Bearer wrong-token"} {
			req, err := http.NewRequestWithContext(t.Context(), route.method, b.srv.URL+route.path,
				strings.NewReader(`{"unionid":"test-u1","openid":"o"}`))
			require.NoError(t, err)
			if header != "" {
				req.Header.Set("Authorization", header)
			}
			resp, err := b.client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s %s %s", name, route.method, route.path)
		}
	}
	require.Zero(t, b.count(t, `SELECT count(*) FROM fans`))
	require.Empty(t, b.wecom.Calls())
}

func TestAPI_Status(t *testing.T) {
	t.Parallel()
	fw := &pipelinetest.FakeWeCom{StatsFunc: func() wecom.Stats {
		return wecom.Stats{
			Calls:  map[string]int64{"corpgroup/unionid_to_pending_id": 7},
			Errors: map[int]int64{wecom.CodeSystemBusy: 2},
		}
	}}
	quota := &pipelinetest.FakeQuota{Windows: []quota.Usage{{Length: time.Hour, Limit: 100000, Used: 7}}}
	b := setupAPI(t, apiOpts{wecom: fw, quota: quota})

	// One registered fan linked to one customer; one pending and one failed event.
	registerFan(t, b, "test-u1", "o-1", "p-1")
	resolved := storetest.NewEvent(store.KindAddExternalContact)
	_, err := b.db.SaveEvent(t.Context(), resolved)
	require.NoError(t, err)
	storetest.Resolve(t, b.db, store.Resolution{CorpID: resolved.CorpID, ExternalUserID: resolved.ExternalUserID, PendingID: "p-1", EventID: resolved.ID})
	_, err = b.db.SaveEvent(t.Context(), storetest.NewEvent(store.KindAddExternalContact))
	require.NoError(t, err)
	failed := storetest.NewEvent(store.KindAddExternalContact)
	_, err = b.db.SaveEvent(t.Context(), failed)
	require.NoError(t, err)
	storetest.Resolve(t, b.db, store.Resolution{CorpID: failed.CorpID, ExternalUserID: failed.ExternalUserID, EventID: failed.ID, Failed: true, Reason: "errcode 48002"})

	code, body := b.do(t, http.MethodGet, "/v1/status", nil)
	require.Equal(t, http.StatusOK, code)

	t.Run("KeysAreAContract", func(t *testing.T) {
		var m map[string]map[string]any
		require.NoError(t, json.Unmarshal(body, &m))
		for _, k := range []string{
			// Old keys, kept.
			"events.received", "events.duplicate", "events.ignored", "events.by_type", "callbacks.rejected", "queue.pending",
			// Pipeline keys.
			"events.resolved", "events.pending", "events.unmatched", "events.failed", "events.failure_reasons",
			"fans.registered", "fans.valid", "fans.expiring", "fans.expired",
			"links.total", "links.active", "wecom.calls", "wecom.errors", "wecom.quota",
		} {
			group, key, _ := strings.Cut(k, ".")
			require.Contains(t, m[group], key, k)
		}
	})

	t.Run("Values", func(t *testing.T) {
		st := decodeAs[apiclient.StatusResponse](t, body)
		require.Equal(t, int64(3), st.Events.Received)
		require.Equal(t, int64(1), st.Events.Resolved)
		require.Equal(t, int64(1), st.Events.Pending)
		require.Equal(t, int64(1), st.Events.Failed)
		require.Equal(t, map[string]int64{"errcode 48002": 1}, st.Events.FailureReasons)
		require.Equal(t, apiclient.FansStatus{Registered: 1, Valid: 1}, st.Fans)
		require.Equal(t, apiclient.LinksStatus{Total: 1, Active: 1}, st.Links)
		require.Equal(t, map[string]int64{"corpgroup/unionid_to_pending_id": 7}, st.WeCom.Calls)
		require.Equal(t, map[string]int64{"-1": 2}, st.WeCom.Errors)
		require.Equal(t, []apiclient.QuotaWindow{{Window: "1h0m0s", Used: 7, Limit: 100000}}, st.WeCom.Quota)
	})
}
