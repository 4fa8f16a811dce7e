package handlers

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// The status page: plain HTML, CSS and JavaScript embedded in the binary,
// no build step and nothing loaded from elsewhere. It is served at / and
// reads the /v1 API with a session cookie.

//go:embed ui
var uiFS embed.FS

// Session cookie settings.
const (
	sessionCookie = "pendinglink_session"
	// SessionLifetime is how long a sign-in lasts.
	SessionLifetime = 12 * time.Hour
	// csrfHeader must accompany every state-changing /v1 request a session
	// cookie authenticates: a cross-site form cannot send it, and a
	// cross-site fetch that tries needs a CORS preflight, which is refused.
	csrfHeader = "X-Pendinglink-Csrf"
	// maxLoginBody caps the sign-in form.
	maxLoginBody = 4 << 10
)

// sessions issues and checks session cookie values. A value is an expiry
// and an HMAC of it under a key derived from the admin token: it is not the
// token and reveals nothing of it, every instance sharing the token accepts
// it, and rotating the token signs every session out.
type sessions struct {
	key []byte
	now func() time.Time
}

func newSessions(adminToken string, now func() time.Time) sessions {
	mac := hmac.New(sha256.New, []byte(adminToken))
	mac.Write([]byte("pendinglink session key v1"))
	return sessions{key: mac.Sum(nil), now: now}
}

func (s sessions) sign(expires string) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(expires))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// issue returns a new session value and when it expires.
func (s sessions) issue() (string, time.Time) {
	exp := s.now().Add(SessionLifetime).Truncate(time.Second)
	e := strconv.FormatInt(exp.Unix(), 10)
	return e + "." + s.sign(e), exp
}

// valid reports whether v is an unexpired value this server issued.
func (s sessions) valid(v string) bool {
	e, mac, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	exp, err := strconv.ParseInt(e, 10, 64)
	if err != nil || !s.now().Before(time.Unix(exp, 0)) {
		return false
	}
	return hmac.Equal([]byte(mac), []byte(s.sign(e)))
}

// fromRequest reports whether the request carries a valid session cookie.
func (s sessions) fromRequest(r *http.Request) bool {
	c, err := r.Cookie(sessionCookie)
	return err == nil && s.valid(c.Value)
}

// sameOrigin reports whether a browser request comes from a page of this
// server. Browsers send Origin with every POST (and Sec-Fetch-Site with
// every request); a request with neither is not a browser's cross-site one.
// Only the host is compared: behind a TLS proxy the scheme differs.
func sameOrigin(r *http.Request) bool {
	// "null" is what a browser sends when a policy hides the origin; then
	// Sec-Fetch-Site decides.
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		return err == nil && u.Host == r.Host
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		return site == "same-origin" || site == "none"
	}
	return true
}

// safeMethod: methods that change nothing, which need no CSRF check.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// ui serves the status page.
type ui struct {
	s        *Server
	sessions sessions
	page     []byte
	login    *template.Template
	assets   http.Handler
}

func (s *Server) mountUI() error {
	sub, err := fs.Sub(uiFS, "ui")
	if err != nil {
		return err
	}
	page, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		return err
	}
	login, err := template.ParseFS(sub, "login.html")
	if err != nil {
		return err
	}
	u := &ui{s: s, sessions: s.sessions, page: page, login: login,
		assets: http.StripPrefix("/ui/", http.FileServer(http.FS(sub)))}
	s.GET("/", u.index, pageHeaders)
	s.GET("/ui/app.js", u.asset, pageHeaders)
	s.GET("/ui/app.css", u.asset, pageHeaders)
	s.POST("/ui/login", u.signIn, pageHeaders)
	s.POST("/ui/logout", u.signOut, pageHeaders)
	return nil
}

// pageHeaders keep the page to its own scripts and styles, out of frames,
// and its URLs out of other sites' logs.
func pageHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		// same-origin, not no-referrer: with no-referrer the form's POST
		// would carry Origin "null", which the same-origin check needs.
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-cache")
		return next(c)
	}
}

// index is the page when signed in, the sign-in form otherwise.
func (u *ui) index(c echo.Context) error {
	if !u.sessions.fromRequest(c.Request()) {
		return u.loginForm(c, http.StatusOK, "")
	}
	return c.HTMLBlob(http.StatusOK, u.page)
}

func (u *ui) asset(c echo.Context) error {
	u.assets.ServeHTTP(c.Response(), c.Request())
	return nil
}

func (u *ui) loginForm(c echo.Context, status int, msg string) error {
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
	c.Response().WriteHeader(status)
	return u.login.Execute(c.Response(), struct{ Error string }{msg})
}

// signIn takes the admin token from the form body (never from the URL) and
// answers with a session cookie. The token itself is neither logged nor
// stored in the cookie.
func (u *ui) signIn(c echo.Context) error {
	r := c.Request()
	if !sameOrigin(r) {
		return echo.NewHTTPError(http.StatusForbidden, "cross-site sign-in refused")
	}
	r.Body = http.MaxBytesReader(c.Response(), r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		return u.loginForm(c, http.StatusBadRequest, "The form could not be read.")
	}
	token := r.PostForm.Get("token")
	if subtle.ConstantTimeCompare([]byte(token), []byte(u.s.cfg.AdminToken)) != 1 {
		u.s.cfg.Logger.Warn("status page sign-in refused: wrong admin token", "remote", c.RealIP())
		return u.loginForm(c, http.StatusUnauthorized, "That is not the admin token.")
	}
	v, exp := u.sessions.issue()
	c.SetCookie(u.cookie(c, v, exp))
	return c.Redirect(http.StatusSeeOther, "/")
}

func (u *ui) signOut(c echo.Context) error {
	if !sameOrigin(c.Request()) {
		return echo.NewHTTPError(http.StatusForbidden, "cross-site sign-out refused")
	}
	ck := u.cookie(c, "", time.Unix(0, 0))
	ck.MaxAge = -1
	c.SetCookie(ck)
	return c.Redirect(http.StatusSeeOther, "/")
}

// cookie is the session cookie: unreadable by scripts, never sent by
// another site, and over TLS only when the page came over TLS (directly or
// through a proxy that says so).
func (u *ui) cookie(c echo.Context, value string, expires time.Time) *http.Cookie {
	return &http.Cookie{
		Name: sessionCookie, Value: value, Path: "/", Expires: expires,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.Scheme() == "https",
	}
}
