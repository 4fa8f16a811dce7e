package handlers

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// JobsUIPrefix is where Config.JobsUI is served.
const JobsUIPrefix = "/riverui"

// mountJobsUI serves River's web UI under JobsUIPrefix behind the admin
// token. A browser cannot add a bearer token to the UI's own requests, so
// HTTP Basic with the token as password (any user name) is accepted too,
// and the 401 asks for it.
func (s *Server) mountJobsUI(e *echo.Echo, ui http.Handler) {
	h := s.requireAdminBrowser(echo.WrapHandler(ui))
	e.Any(JobsUIPrefix, h)
	e.Any(JobsUIPrefix+"/*", h)
}

func (s *Server) requireAdminBrowser(next echo.HandlerFunc) echo.HandlerFunc {
	want := []byte(s.cfg.AdminToken)
	return func(c echo.Context) error {
		r := c.Request()
		got, ok := strings.CutPrefix(r.Header.Get(echo.HeaderAuthorization), "Bearer ")
		if !ok {
			_, got, ok = r.BasicAuth()
		}
		if !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Basic realm="pendinglink", charset="UTF-8"`)
			return echo.NewHTTPError(http.StatusUnauthorized, "missing or invalid admin token")
		}
		// The browser resends Basic credentials on its own, so a page of
		// another site could post to the UI's API (cancel, delete, retry):
		// refuse changes that browsers mark as cross-site.
		if !safeMethod(r.Method) {
			if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
				return echo.NewHTTPError(http.StatusForbidden, "cross-site request refused")
			}
		}
		return next(c)
	}
}
