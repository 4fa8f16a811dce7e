package apiclient_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/store"
)

const testToken = "test-admin-token-DO-NOT-LOG"

// serve starts a server that answers every request with h and returns a
// client of it.
func serve(t *testing.T, h http.HandlerFunc) *apiclient.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &apiclient.Client{BaseURL: srv.URL, Token: testToken, HTTPClient: srv.Client()}
}

// answer writes v as JSON with status code.
func answer(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func TestClient_Requests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	type request struct {
		method, uri, auth, contentType string
		body                           json.RawMessage
	}
	var got request
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got = request{method: r.Method, uri: r.URL.RequestURI(), auth: r.Header.Get("Authorization"), contentType: r.Header.Get("Content-Type")}
		if b, _ := io.ReadAll(r.Body); len(b) > 0 {
			got.body = bytes.TrimSpace(b)
		}
		switch r.URL.Path {
		case "/v1/fans":
			answer(w, http.StatusCreated, map[string]any{"unionid": "u1", "queued": false})
		case "/v1/fans/batch":
			answer(w, http.StatusAccepted, apiclient.BatchResponse{Accepted: 2, Queued: 1, Skipped: 1})
		default:
			answer(w, http.StatusOK, map[string]any{})
		}
	})
	t.Run("RegisterFan", func(t *testing.T) {
		fr, code, err := c.RegisterFan(ctx, store.FanInput{UnionID: "u1", OpenID: "o1"})
		require.NoError(t, err)
		require.Equal(t, http.StatusCreated, code)
		require.Equal(t, "u1", fr.UnionID)
		require.Equal(t, request{http.MethodPost, "/v1/fans", "Bearer " + testToken, "application/json",
			json.RawMessage(`{"unionid":"u1","openid":"o1"}`)}, got)
	})

	t.Run("RegisterFans", func(t *testing.T) {
		br, err := c.RegisterFans(ctx, []store.FanInput{{UnionID: "u1", OpenID: "o1"}, {UnionID: "u2", OpenID: "o2"}})
		require.NoError(t, err)
		require.Equal(t, apiclient.BatchResponse{Accepted: 2, Queued: 1, Skipped: 1}, br)
		require.Equal(t, "/v1/fans/batch", got.uri)
	})

	for _, tt := range []struct {
		name, uri string
		call      func() error
	}{
		{"Status", "/v1/status", func() error { _, err := c.Status(ctx); return err }},
		{"FanEscapesThePath", "/v1/fans/a%2Fb", func() error { _, err := c.Fan(ctx, "a/b"); return err }},
		{"Customer", "/v1/customers/wwcorp/wm%20x", func() error { _, err := c.Customer(ctx, "wwcorp", "wm x"); return err }},
		{"StoryOfAFan", "/v1/story?unionid=u1", func() error { _, err := c.Story(ctx, apiclient.StoryQuery{UnionID: "u1"}); return err }},
		{"StoryOfACustomer", "/v1/story?corp_id=wwcorp&external_userid=wm+x", func() error {
			_, err := c.Story(ctx, apiclient.StoryQuery{CorpID: "wwcorp", ExternalUserID: "wm x"})
			return err
		}},
		{"ActivityDefault", "/v1/activity", func() error { _, err := c.Activity(ctx, 0); return err }},
		{"Activity", "/v1/activity?hours=168", func() error { _, err := c.Activity(ctx, 168); return err }},
		{"LinksWithoutFilter", "/v1/links", func() error { _, err := c.Links(ctx, apiclient.LinkFilter{}); return err }},
		{"LinksWithFilter", "/v1/links?" + url.Values{
			"unionid": {"u1"}, "corp_id": {"wwcorp"}, "external_userid": {"wm1"}, "since": {"2026-01-02T15:04:05Z"},
			"limit": {"1000"}, "cursor": {"42"},
		}.Encode(), func() error {
			_, err := c.Links(ctx, apiclient.LinkFilter{UnionID: "u1", CorpID: "wwcorp", ExternalUserID: "wm1",
				Since: time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC), Limit: 1000, Cursor: "42"})
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, tt.call())
			require.Equal(t, request{method: http.MethodGet, uri: tt.uri, auth: "Bearer " + testToken}, got)
		})
	}
}

func TestClient_Errors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	for _, tt := range []struct {
		name    string
		status  int
		body    string
		wantMsg string
	}{
		{"Unauthorized", http.StatusUnauthorized, `{"error":"missing or invalid bearer token"}`, "missing or invalid bearer token"},
		{"BadRequestNamesTheParameter", http.StatusBadRequest, `{"error":"limit: must be an integer from 1 to 1000"}`, "limit: must be an integer from 1 to 1000"},
		{"NotFound", http.StatusNotFound, `{"error":"not found"}`, "not found"},
		{"ServerErrorWithoutJSON", http.StatusBadGateway, "<html>bad gateway</html>\n", "<html>bad gateway</html>"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := serve(t, func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			})
			_, err := c.Status(ctx)
			var ae *apiclient.Error
			require.ErrorAs(t, err, &ae)
			require.Equal(t, apiclient.Error{Status: tt.status, Message: tt.wantMsg}, *ae)
			require.Equal(t, tt.status, apiclient.StatusCode(err))
			require.NotContains(t, err.Error(), testToken)
		})
	}

	t.Run("RegisterFanReportsTheStatusOfARefusal", func(t *testing.T) {
		t.Parallel()
		c := serve(t, func(w http.ResponseWriter, _ *http.Request) {
			answer(w, http.StatusUnprocessableEntity, map[string]string{"error": "WeCom refused the registration: errcode 40003"})
		})
		_, code, err := c.RegisterFan(ctx, store.FanInput{UnionID: "u", OpenID: "o"})
		require.Equal(t, http.StatusUnprocessableEntity, code)
		require.EqualError(t, err, "HTTP 422: WeCom refused the registration: errcode 40003")
	})

	t.Run("BadJSONIsNotAnError", func(t *testing.T) {
		t.Parallel()
		c := serve(t, func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("<html>a login page</html>"))
		})
		_, err := c.Status(ctx)
		require.ErrorContains(t, err, "GET /v1/status: unexpected answer")
		var se *json.SyntaxError
		require.ErrorAs(t, err, &se)
		require.Zero(t, apiclient.StatusCode(err))
	})

	t.Run("NoServerIsAURLError", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		c := &apiclient.Client{BaseURL: srv.URL, Token: testToken}
		_, err := c.Status(ctx)
		var ue *url.Error
		require.ErrorAs(t, err, &ue)
		require.NotContains(t, err.Error(), testToken)
	})

	t.Run("ContextCancelEndsTheCall", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		c := serve(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})
		t.Cleanup(func() { close(release) })
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := c.Status(ctx)
		require.ErrorIs(t, err, context.Canceled)
		require.False(t, errors.As(err, new(*apiclient.Error)))
	})
}
