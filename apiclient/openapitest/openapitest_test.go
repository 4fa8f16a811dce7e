package openapitest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient/openapitest"
)

// exchange is one request and the answer it got.
type exchange struct {
	method, target, auth, reqBody string
	// cookie is the Cookie header, e.g. the status page's session.
	cookie                string
	status                int
	contentType, respBody string
}

func (e exchange) check(t *testing.T, v *openapitest.Validator) error {
	t.Helper()
	var body *strings.Reader
	if e.reqBody != "" {
		body = strings.NewReader(e.reqBody)
	}
	var req *http.Request
	if body != nil {
		req = httptest.NewRequestWithContext(t.Context(), e.method, e.target, body)
		req.Header.Set("Content-Type", "application/json")
	} else {
		req = httptest.NewRequestWithContext(t.Context(), e.method, e.target, nil)
	}
	if e.auth != "" {
		req.Header.Set("Authorization", e.auth)
	}
	if e.cookie != "" {
		req.Header.Set("Cookie", e.cookie)
	}
	h := http.Header{}
	if e.contentType != "" {
		h.Set("Content-Type", e.contentType)
	}
	return v.Check(t.Context(), req, []byte(e.reqBody), e.status, h, []byte(e.respBody))
}

const (
	bearer    = "Bearer some-token"
	jsonType  = "application/json"
	fanAnswer = `{"unionid":"u1","openid":"o1","priority":50,"state":"registered","pending_ids":[],"links":[],"created_at":"2026-03-01T08:00:00Z"}`
)

// TestValidator_Check shows the validator passes what the document allows
// and catches each kind of mismatch; a validator that let them through would
// make every test using it vacuous.
func TestValidator_Check(t *testing.T) {
	t.Parallel()
	v := openapitest.MustNew(t)
	for name, tc := range map[string]struct {
		ex      exchange
		wantErr string
	}{
		"OK": {ex: exchange{method: "GET", target: "/v1/fans/u1", auth: bearer, status: 200, contentType: jsonType, respBody: fanAnswer}},
		"OKErrorAnswer": {ex: exchange{method: "GET", target: "/v1/fans/u1", auth: bearer, status: 404, contentType: jsonType,
			respBody: `{"error":"not found"}`}},
		"OKNoTokenRefused": {ex: exchange{method: "GET", target: "/v1/status", status: 401, contentType: jsonType,
			respBody: `{"error":"missing or invalid bearer token"}`}},
		"OKSessionCookie": {ex: exchange{method: "GET", target: "/v1/fans/u1", cookie: "pendinglink_session=1.mac", status: 200,
			contentType: jsonType, respBody: fanAnswer}},
		"ErrOtherCookieNot401": {ex: exchange{method: "GET", target: "/v1/fans/u1", cookie: "other=1", status: 200,
			contentType: jsonType, respBody: fanAnswer}, wantErr: "not 401"},
		"OKInvalidRequestRefused": {ex: exchange{method: "GET", target: "/v1/links?limit=0", auth: bearer, status: 400, contentType: jsonType,
			respBody: `{"error":"limit: must be an integer from 1 to 1000"}`}},
		"OKUnknownRouteRefused": {ex: exchange{method: "GET", target: "/v1/nope", auth: bearer, status: 404, contentType: jsonType,
			respBody: `{"error":"Not Found"}`}},
		"OKDocumentWithoutToken": {ex: exchange{method: "GET", target: "/v1/openapi.json", status: 200, contentType: jsonType, respBody: `{}`}},
		"ErrUndocumentedKey": {ex: exchange{method: "GET", target: "/v1/fans/u1", auth: bearer, status: 200, contentType: jsonType,
			respBody: strings.Replace(fanAnswer, `{`, `{"secret":"x",`, 1)}, wantErr: "which the document does not allow"},
		"ErrMissingKey": {ex: exchange{method: "GET", target: "/v1/fans/u1", auth: bearer, status: 200, contentType: jsonType,
			respBody: strings.Replace(fanAnswer, `"state":"registered",`, ``, 1)}, wantErr: "which the document does not allow"},
		"ErrWrongType": {ex: exchange{method: "GET", target: "/v1/fans/u1", auth: bearer, status: 200, contentType: jsonType,
			respBody: strings.Replace(fanAnswer, `"priority":50`, `"priority":"50"`, 1)}, wantErr: "which the document does not allow"},
		"ErrUndocumentedStatus": {ex: exchange{method: "GET", target: "/v1/fans/u1", auth: bearer, status: 409, contentType: jsonType,
			respBody: `{"error":"conflict"}`}, wantErr: "which the document does not allow"},
		"ErrErrorNotInTheErrorShape": {ex: exchange{method: "GET", target: "/v1/fans/u1", auth: bearer, status: 404, contentType: jsonType,
			respBody: `{"message":"not found"}`}, wantErr: "which the document does not allow"},
		"ErrTextError": {ex: exchange{method: "GET", target: "/v1/fans/u1", auth: bearer, status: 404, contentType: "text/plain",
			respBody: `not found`}, wantErr: "which the document does not allow"},
		"ErrInvalidRequestAccepted": {ex: exchange{method: "POST", target: "/v1/fans", auth: bearer, reqBody: `{"unionid":"u1"}`,
			status: 201, contentType: jsonType, respBody: fanAnswer}, wantErr: "calls the request invalid"},
		"ErrNoTokenNot401": {ex: exchange{method: "GET", target: "/v1/fans/u1", status: 404, contentType: jsonType,
			respBody: `{"error":"not found"}`}, wantErr: "not 401"},
		"ErrUnknownRouteAnswered": {ex: exchange{method: "GET", target: "/v1/nope", auth: bearer, status: 200, contentType: jsonType,
			respBody: `{}`}, wantErr: "is not in the document"},
		"ErrUnknownRouteTextError": {ex: exchange{method: "DELETE", target: "/v1/fans/u1", auth: bearer, status: 405, contentType: "text/plain",
			respBody: `Method Not Allowed`}, wantErr: "is not the Error shape"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := tc.ex.check(t, v)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestValidator_CheckRequest(t *testing.T) {
	t.Parallel()
	v := openapitest.MustNew(t)
	req := httptest.NewRequestWithContext(t.Context(), "PATCH", "/v1/fans/u1", strings.NewReader(`{"priority":7}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", bearer)
	op, err := v.CheckRequest(t.Context(), req, []byte(`{"priority":7}`))
	require.NoError(t, err)
	require.Equal(t, "updateFan", op)

	_, err = v.CheckRequest(t.Context(), req, []byte(`{"priority":700}`))
	require.Error(t, err, "priority above 100")
}

// TestValidator_Transport shows a mismatch seen by the RoundTripper fails
// the test that owns it, and that the client gets the answer unchanged.
func TestValidator_Transport(t *testing.T) {
	t.Parallel()
	v := openapitest.MustNew(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte("no such fan"))
	}))
	t.Cleanup(srv.Close)

	inner := &recordingTB{TB: t}
	client := &http.Client{Transport: v.Transport(inner, srv.Client().Transport)}
	req, err := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/v1/fans/u1", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", bearer)
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Empty(t, inner.errs, "reported when the test ends, not before")

	inner.runCleanups()
	require.Len(t, inner.errs, 1)
	require.Contains(t, inner.errs[0], "GET /v1/fans/u1 answered 404")
}

// recordingTB is a testing.TB whose failures and cleanups the test holds.
type recordingTB struct {
	testing.TB
	errs     []string
	cleanups []func()
}

func (r *recordingTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recordingTB) Errorf(format string, a ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, a...))
}

func (r *recordingTB) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// BenchmarkValidator_Check measures what checking one answer adds to a
// test's request: a page of 100 links, the largest answer tests poll.
func BenchmarkValidator_Check(b *testing.B) {
	v := openapitest.MustNew(b)
	link := `{"id":1,"unionid":"test-u1","openid":"o1","pending_id":"p1","corp_id":"wwtest","external_userid":"wm1","user_id":"staff-a","active":true,"matched_at":"2026-03-01T08:00:00Z"}`
	page := `{"links":[` + strings.TrimSuffix(strings.Repeat(link+",", 100), ",") + `],"next_cursor":"1"}`
	req := httptest.NewRequestWithContext(b.Context(), "GET", "/v1/links?limit=100", nil)
	req.Header.Set("Authorization", bearer)
	h := http.Header{"Content-Type": {jsonType}}
	for b.Loop() {
		if err := v.Check(b.Context(), req, nil, http.StatusOK, h, []byte(page)); err != nil {
			b.Fatal(err)
		}
	}
}
