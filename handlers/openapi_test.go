package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"mime"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/apiclient/openapitest"
	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/store"
)

// echoParam matches an echo path parameter, ":unionid".
var echoParam = regexp.MustCompile(`:([A-Za-z_]+)`)

func TestServer_RoutesMatchTheDocument(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, apiOpts{})
	var routes []string
	for _, r := range b.server.Routes() {
		if r.Method == echo.RouteNotFound {
			continue // the /v1 group's catch-all, which makes the token apply to unknown paths
		}
		routes = append(routes, r.Method+" "+echoParam.ReplaceAllString(r.Path, "{$1}"))
	}
	documented := slices.Collect(maps.Keys(openapitest.MustNew(t).Operations()))
	require.ElementsMatch(t, documented, routes, "routes the server registers against operations the document lists")
}

func TestServer_OpenAPIDocument(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, apiOpts{})
	resp, err := b.client.Get(b.srv.URL + handlers.OpenAPIPath) // no token
	require.NoError(t, err)
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))

	file, err := os.ReadFile("../apiclient/openapi.json")
	require.NoError(t, err)
	require.Equal(t, file, got, "the served document is the repository's file")
	var doc struct {
		OpenAPI string `json:"openapi"`
	}
	require.NoError(t, json.Unmarshal(got, &doc))
	require.Equal(t, "3.1.0", doc.OpenAPI)

	status, err := b.client.Get(b.srv.URL + "/v1/status")
	require.NoError(t, err)
	status.Body.Close()
	require.Equal(t, http.StatusUnauthorized, status.StatusCode, "the rest of /v1 keeps the token")
}

// TestServer_ErrorsShareOneShape asks each route for each error it can give
// and requires the one shape: a JSON object whose only key is a non-empty
// "error". The bundles' clients also check each answer against the document.
func TestServer_ErrorsShareOneShape(t *testing.T) {
	t.Parallel()
	api := setupAPI(t, apiOpts{})
	refusing := setupAPI(t, apiOpts{wecom: registerFails(610014, "invalid unionid")})
	failing := setup(t, setupOpts{store: &storeFunc{
		SaveEventFunc: func(context.Context, *store.Event) (bool, error) { return false, errors.New("disk I/O error") },
		StatusFunc:    func(context.Context) (store.Status, error) { return store.Status{}, errors.New("disk I/O error") },
		PingFunc:      func(context.Context) error { return errors.New("disk I/O error") },
	}})
	callbacks := setup(t, setupOpts{bodyLimit: 1024})
	fan := `{"unionid":"test-u1","openid":"o-test-u1"}`
	signedURL, envelope := callbacks.seal(t, []byte("<xml/>"), testCorpID)

	for name, tc := range map[string]struct {
		client      *http.Client
		method, url string
		auth        bool
		body        string
		contentType string
		want        int
	}{
		"BadParameter":   {client: api.client, method: "GET", url: api.srv.URL + "/v1/links?limit=0", auth: true, want: 400},
		"BadJSON":        {client: api.client, method: "POST", url: api.srv.URL + "/v1/fans", auth: true, body: `{"unionid":`, want: 400},
		"UnknownField":   {client: api.client, method: "PATCH", url: api.srv.URL + "/v1/fans/test-u1", auth: true, body: `{"priority":5,"x":1}`, want: 400},
		"NoToken":        {client: api.client, method: "GET", url: api.srv.URL + "/v1/quota", want: 401},
		"NoTokenUnknown": {client: api.client, method: "GET", url: api.srv.URL + "/v1/nope", want: 401},
		"UnknownFan":     {client: api.client, method: "GET", url: api.srv.URL + "/v1/fans/test-nobody", auth: true, want: 404},
		"UnknownV1Route": {client: api.client, method: "GET", url: api.srv.URL + "/v1/nope", auth: true, want: 404},
		"UnknownRoute":   {client: api.client, method: "GET", url: api.srv.URL + "/nope", want: 404},
		"WrongMethod":    {client: api.client, method: "POST", url: api.srv.URL + "/healthz", want: 405},
		// The /v1 group's catch-all answers a wrong method there.
		"WrongMethodInV1":  {client: api.client, method: "DELETE", url: api.srv.URL + "/v1/fans/test-u1", auth: true, want: 404},
		"BodyTooLarge":     {client: api.client, method: "POST", url: api.srv.URL + "/v1/fans/batch", auth: true, body: "[" + strings.Repeat(" ", 1<<20) + "]", want: 413},
		"WeComRefuses":     {client: refusing.client, method: "POST", url: refusing.srv.URL + "/v1/fans", auth: true, body: fan, want: 422},
		"Internal":         {client: failing.client, method: "GET", url: failing.srv.URL + "/v1/status", auth: true, want: 500},
		"NotReady":         {client: failing.client, method: "GET", url: failing.srv.URL + "/readyz", want: 503},
		"CallbackUnsigned": {client: callbacks.client, method: "POST", url: callbacks.srv.URL + handlers.DefaultCallbackPath, body: "<xml/>", contentType: "text/xml", want: 401},
		"CallbackTooLarge": {client: callbacks.client, method: "POST", url: signedURL, body: string(envelope) + strings.Repeat(" ", 1024), contentType: "text/xml", want: 413},
		"CallbackNotStored": {client: failing.client, method: "POST", url: strings.Replace(signedURL, callbacks.srv.URL, failing.srv.URL, 1),
			body: string(envelope), contentType: "text/xml", want: 503},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), tc.method, tc.url, strings.NewReader(tc.body))
			require.NoError(t, err)
			if tc.auth {
				req.Header.Set("Authorization", "Bearer "+testAdminToken)
			}
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp, err := tc.client.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, tc.want, resp.StatusCode, string(body))

			mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			require.NoError(t, err)
			require.Equal(t, "application/json", mt)
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			var e apiclient.ErrorResponse
			require.NoError(t, dec.Decode(&e), string(body))
			require.NotEmpty(t, e.Error)
			if tc.want >= 500 && tc.want != http.StatusServiceUnavailable {
				require.Equal(t, "internal error", e.Error, "causes stay out of answers")
			}
			require.NotContains(t, string(body), "disk")
		})
	}
}
