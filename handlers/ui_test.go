package handlers_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/internal/fakeclock"
	"github.com/pendinglink/pendinglink/internal/syncbuf"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

// browser sends requests as the status page's browser would: no bearer
// token, and the cookies it was given. They go through the bundle's client,
// so the document checks them too.
type browser struct {
	t       *testing.T
	b       *apiBundle
	cookies []*http.Cookie
}

func (br *browser) send(method, path string, body io.Reader, header map[string]string) (*http.Response, string) {
	br.t.Helper()
	req, err := http.NewRequestWithContext(br.t.Context(), method, br.b.srv.URL+path, body)
	require.NoError(br.t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	for _, c := range br.cookies {
		req.AddCookie(c)
	}
	client := *br.b.client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	require.NoError(br.t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(br.t, err)
	return resp, string(out)
}

// signIn posts the sign-in form with token from the server's own origin
// and keeps the cookies it sets.
func (br *browser) signIn(token string, header map[string]string) (*http.Response, string) {
	br.t.Helper()
	h := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": br.b.srv.URL}
	for k, v := range header {
		h[k] = v
	}
	resp, body := br.send(http.MethodPost, "/ui/login", strings.NewReader(url.Values{"token": {token}}.Encode()), h)
	br.cookies = append(br.cookies, resp.Cookies()...)
	return resp, body
}

func sessionCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == "pendinglink_session" {
			return c
		}
	}
	require.Fail(t, "no session cookie", "Set-Cookie: %q", resp.Header.Values("Set-Cookie"))
	return nil
}

func TestUI_SignIn(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(apiNow)
	b := setupAPI(t, apiOpts{now: clock.Now})

	t.Run("PageAsksForTheTokenFirst", func(t *testing.T) {
		br := &browser{t: t, b: b}
		resp, body := br.send(http.MethodGet, "/", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, body, `<form method="post" action="/ui/login"`)
		require.Contains(t, body, `name="token" type="password"`)
		require.NotContains(t, body, `id="chart-events"`)
		require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'self'")
		require.Contains(t, resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'")
		resp, _ = br.send(http.MethodGet, "/v1/status", nil, nil)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	})

	t.Run("WrongTokenGetsNoSession", func(t *testing.T) {
		br := &browser{t: t, b: b}
		resp, body := br.signIn("not-the-admin-token", nil)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		require.Empty(t, resp.Cookies())
		require.Contains(t, body, "That is not the admin token.")
	})

	t.Run("SessionCookieIsNotTheTokenAndOpensTheAPI", func(t *testing.T) {
		br := &browser{t: t, b: b}
		resp, _ := br.signIn(testAdminToken, nil)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/", resp.Header.Get("Location"))
		c := sessionCookie(t, resp)
		require.True(t, c.HttpOnly)
		require.Equal(t, http.SameSiteStrictMode, c.SameSite)
		require.False(t, c.Secure, "plain HTTP: a Secure cookie would never come back")
		require.Equal(t, "/", c.Path)
		require.NotContains(t, c.Value, testAdminToken)
		require.NotContains(t, resp.Header.Get("Location"), testAdminToken)

		resp, body := br.send(http.MethodGet, "/", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, body, `id="chart-events"`)
		resp, body = br.send(http.MethodGet, "/v1/status", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
	})

	t.Run("SecureBehindTLS", func(t *testing.T) {
		br := &browser{t: t, b: b}
		resp, _ := br.signIn(testAdminToken, map[string]string{"X-Forwarded-Proto": "https"})
		require.True(t, sessionCookie(t, resp).Secure)
	})

	t.Run("CrossSiteSignInRefused", func(t *testing.T) {
		br := &browser{t: t, b: b}
		resp, _ := br.signIn(testAdminToken, map[string]string{"Origin": "https://evil.example"})
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
		require.Empty(t, resp.Cookies())
	})

	t.Run("TamperedCookieRefused", func(t *testing.T) {
		br := &browser{t: t, b: b}
		resp, _ := br.signIn(testAdminToken, nil)
		c := sessionCookie(t, resp)
		exp, mac, ok := strings.Cut(c.Value, ".")
		require.True(t, ok)
		// A later expiry under the same MAC.
		br.cookies = []*http.Cookie{{Name: c.Name, Value: exp + "9." + mac}}
		resp, _ = br.send(http.MethodGet, "/v1/status", nil, nil)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	})

	t.Run("SignOutEndsTheSession", func(t *testing.T) {
		br := &browser{t: t, b: b}
		br.signIn(testAdminToken, nil)
		resp, _ := br.send(http.MethodPost, "/ui/logout", nil, map[string]string{"Origin": b.srv.URL})
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		c := sessionCookie(t, resp)
		require.Empty(t, c.Value)
		require.Negative(t, c.MaxAge)
	})
}

func TestUI_SessionExpires(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(apiNow)
	b := setupAPI(t, apiOpts{now: clock.Now})
	br := &browser{t: t, b: b}
	br.signIn(testAdminToken, nil)
	clock.Advance(11 * time.Hour)
	resp, _ := br.send(http.MethodGet, "/v1/status", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	clock.Advance(time.Hour)
	resp, _ = br.send(http.MethodGet, "/v1/status", nil, nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

func TestUI_CookieChangesNeedTheCSRFHeader(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, apiOpts{})
	br := &browser{t: t, b: b}
	br.signIn(testAdminToken, nil)
	reconcile := func(header map[string]string) int {
		resp, _ := br.send(http.MethodPost, "/v1/reconcile", nil, header)
		return resp.StatusCode
	}
	require.Equal(t, http.StatusForbidden, reconcile(nil), "a cross-site form cannot add the header")
	require.Equal(t, http.StatusForbidden, reconcile(map[string]string{"X-Pendinglink-Csrf": "1", "Origin": "https://evil.example"}))
	sw, err := b.db.LatestSweep(t.Context())
	require.NoError(t, err)
	require.Nil(t, sw, "refused requests started nothing")
	require.Equal(t, http.StatusAccepted, reconcile(map[string]string{"X-Pendinglink-Csrf": "1", "Origin": b.srv.URL}))
}

func TestUI_TokenNeverLogged(t *testing.T) {
	t.Parallel()
	logs := &syncbuf.Buffer{}
	b := setupAPIWithLogger(t, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	br := &browser{t: t, b: b}
	const wrong = "wrong-token-that-must-not-be-logged"
	resp, _ := br.signIn(wrong, nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	br.signIn(testAdminToken, nil)
	require.Contains(t, logs.String(), "sign-in refused")
	require.NotContains(t, logs.String(), wrong)
	require.NotContains(t, logs.String(), testAdminToken)
}

// TestUI_RefusedSignInLogsThePeer: the remote logged for a refused sign-in
// is the address that connected, not the X-Forwarded-For its sender wrote.
func TestUI_RefusedSignInLogsThePeer(t *testing.T) {
	t.Parallel()
	logs := &syncbuf.Buffer{}
	b := setupAPIWithLogger(t, slog.New(slog.NewJSONHandler(logs, nil)))
	br := &browser{t: t, b: b}
	resp, _ := br.signIn("wrong-token-0123456789", map[string]string{"X-Forwarded-For": "203.0.113.66", "X-Real-IP": "203.0.113.66"})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, logs.String(), `"remote":"127.0.0.1"`)
	require.NotContains(t, logs.String(), "203.0.113.66")
}

func TestUI_Assets(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, apiOpts{})
	br := &browser{t: t, b: b}
	for path, want := range map[string]string{"/ui/app.js": "text/javascript", "/ui/app.css": "text/css"} {
		resp, body := br.send(http.MethodGet, path, nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.Contains(t, resp.Header.Get("Content-Type"), want, path)
		require.NotEmpty(t, body)
	}
	resp, _ := br.send(http.MethodGet, "/ui/index.html", nil, nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "the page itself is served only at / after sign-in")
}

func TestAPI_Story(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, apiOpts{})
	registerFan(t, b, "test-u1", "o-1", "p-1")
	storetest.Resolve(t, b.db, store.Resolution{CorpID: testDealerCorp, ExternalUserID: "wmtest1", PendingID: "p-1"})

	s := doAs[store.Story](t, b, http.StatusOK, http.MethodGet, "/v1/story?unionid=test-u1", nil)
	require.Len(t, s.Links, 1)
	require.Equal(t, "wmtest1", s.Customers[0].ExternalUserID)
	require.Empty(t, s.Why)

	code, body := b.do(t, http.MethodGet, "/v1/story?corp_id="+testDealerCorp+"&external_userid=wmtest1", nil)
	require.Equal(t, http.StatusOK, code, string(body))
	require.Equal(t, "test-u1", decodeAs[store.Story](t, body).Fans[0].UnionID)

	for query, want := range map[string]int{
		"":                                     http.StatusBadRequest,
		"?unionid=test-u1&corp_id=x":           http.StatusBadRequest,
		"?corp_id=" + testDealerCorp:           http.StatusBadRequest,
		"?unionid=test-nobody":                 http.StatusNotFound,
		"?corp_id=x&external_userid=nobody":    http.StatusNotFound,
		"?unionid=" + strings.Repeat("u", 300): http.StatusBadRequest,
	} {
		code, body := b.do(t, http.MethodGet, "/v1/story"+query, nil)
		require.Equal(t, want, code, "%s: %s", query, body)
	}
}

func TestAPI_Activity(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, apiOpts{})
	_, err := b.db.SaveEvent(t.Context(), storetest.NewEvent(store.KindEditExternalContact))
	require.NoError(t, err)
	a := doAs[store.Activity](t, b, http.StatusOK, http.MethodGet, "/v1/activity", nil)
	require.Len(t, a.EventsPerMinute, 24*60)
	require.Equal(t, int64(1), a.EventsPerMinute[len(a.EventsPerMinute)-1])
	require.Len(t, a.LinksPerHour, 24)

	code, body := b.do(t, http.MethodGet, "/v1/activity?hours=2", nil)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, decodeAs[store.Activity](t, body).LinksPerHour, 2)
	_, err = b.db.SaveEvent(t.Context(), storetest.NewEvent(store.KindEditExternalContact))
	require.NoError(t, err)
	code, body = b.do(t, http.MethodGet, "/v1/activity?cached=1", nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, int64(2), decodeAs[store.Activity](t, body).EventsPerMinute[24*60-1])

	for _, bad := range []string{"0", "169", "x"} {
		code, _ := b.do(t, http.MethodGet, "/v1/activity?hours="+bad, nil)
		require.Equal(t, http.StatusBadRequest, code, bad)
	}
}

func TestAPI_StatusCached(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(apiNow)
	b := setupAPI(t, apiOpts{now: clock.Now})
	status := func(query string) apiclient.StatusResponse {
		code, body := b.do(t, http.MethodGet, "/v1/status"+query, nil)
		require.Equal(t, http.StatusOK, code, string(body))
		return decodeAs[apiclient.StatusResponse](t, body)
	}
	first := status("?cached=1")
	require.True(t, first.Counted.Cached)
	require.True(t, first.Counted.At.Equal(apiNow))

	_, err := b.db.SaveEvent(t.Context(), storetest.NewEvent(store.KindEditExternalContact))
	require.NoError(t, err)
	clock.Advance(time.Second)
	require.Zero(t, status("?cached=1").Events.Received, "a fresh snapshot is shared, not recounted")
	uncached := status("")
	require.Equal(t, int64(1), uncached.Events.Received, "without cached=1 the counts are read now")
	require.False(t, uncached.Counted.Cached)

	code, _ := b.do(t, http.MethodGet, "/v1/status?cached=maybe", nil)
	require.Equal(t, http.StatusBadRequest, code)
	code, _ = b.do(t, http.MethodGet, "/v1/quota?cached=1", nil)
	require.Equal(t, http.StatusOK, code)
}

// setupAPIWithLogger is setupAPI whose handlers log to logger.
func setupAPIWithLogger(t *testing.T, logger *slog.Logger) *apiBundle {
	t.Helper()
	return setupAPIConfig(t, apiOpts{}, func(cfg *handlers.Config) { cfg.Logger = logger })
}
