package handlers_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

// TestAPI_TextIsUTF8WithoutNUL: a query parameter, a path parameter or a
// JSON string that is not UTF-8, or holds NUL, is answered 400 naming it,
// on every engine (PostgreSQL refuses such text with an error that was a
// 500); text that is UTF-8 without NUL goes through.
func TestAPI_TextIsUTF8WithoutNUL(t *testing.T) {
	t.Parallel()
	for _, engine := range storetest.Engines() {
		t.Run(engine.Name, func(t *testing.T) {
			t.Parallel()
			b := setupAPI(t, apiOpts{open: engine.Open})
			for _, tc := range []struct{ method, path, body, param string }{
				{http.MethodGet, "/v1/links?unionid=%00", "", "unionid"},
				{http.MethodGet, "/v1/links?unionid=%ff", "", "unionid"},
				{http.MethodGet, "/v1/links?corp_id=ww1&external_userid=wm%00", "", "external_userid"},
				{http.MethodGet, "/v1/story?corp_id=%ff&external_userid=x", "", "corp_id"},
				{http.MethodGet, "/v1/story?unionid=o%00", "", "unionid"},
				{http.MethodGet, "/v1/fans/a%00b", "", "unionid"},
				{http.MethodGet, "/v1/fans/%ff", "", "unionid"},
				{http.MethodGet, "/v1/fans/%FF", "", "unionid"},
				{http.MethodPatch, "/v1/fans/%ff", `{"priority":5}`, "unionid"},
				{http.MethodGet, "/v1/customers/ww%00/wm1", "", "corp_id"},
				{http.MethodGet, "/v1/customers/ww1/wm%ff", "", "external_userid"},
				{http.MethodPost, "/v1/events/retry", `{"reason":"\u0000"}`, "reason"},
				{http.MethodPost, "/v1/events/retry", `{"reason":"a\u0000b","dry_run":true}`, "reason"},
				{http.MethodPost, "/v1/fans/retry", `{"reason":"\u0000"}`, "reason"},
			} {
				var body any
				if tc.body != "" {
					body = tc.body
				}
				code, out := b.do(t, tc.method, tc.path, body)
				require.Equal(t, http.StatusBadRequest, code, "%s %s %s: %s", tc.method, tc.path, tc.body, out)
				require.Contains(t, errorBody(t, out), tc.param, "%s %s %s", tc.method, tc.path, tc.body)
			}

			// Chinese is text, and so is a JSON string spelling \u0000
			// with an escaped backslash.
			for _, body := range []string{`{"reason":"超时"}`, `{"reason":"\\u0000"}`} {
				code, out := b.do(t, http.MethodPost, "/v1/events/retry", body)
				require.Equal(t, http.StatusOK, code, "%s: %s", body, out)
			}
			code, out := b.do(t, http.MethodGet, "/v1/links?corp_id=%E8%B6%85&external_userid=x", nil)
			require.Equal(t, http.StatusOK, code, string(out))
		})
	}
}

// TestAPI_FanPathIsUnescapedOnce: a fan whose unionid holds a character
// the path escapes ('/', '%', '?', '#') is read and changed through
// apiclient, which escapes it: echo routes on the escaped path when there
// is one, so the handler unescapes the parameter, and only then.
func TestAPI_FanPathIsUnescapedOnce(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, apiOpts{})
	c := &apiclient.Client{BaseURL: b.srv.URL, Token: testAdminToken, HTTPClient: b.client}
	for _, id := range []string{"a/b", "a%2Fb", "a%b", "a?b#c", "%ff"} {
		_, _, err := c.RegisterFan(t.Context(), store.FanInput{UnionID: id, OpenID: "o-" + id})
		require.NoError(t, err, id)
		got, err := c.Fan(t.Context(), id)
		require.NoError(t, err, id)
		require.Equal(t, id, got.UnionID)
		priority := 7
		got, err = c.UpdateFan(t.Context(), id, apiclient.FanPatch{Priority: &priority})
		require.NoError(t, err, id)
		require.Equal(t, id, got.UnionID)
		require.Equal(t, 7, got.Priority, id)
	}
}
