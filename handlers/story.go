package handlers

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

// story answers GET /v1/story?unionid= or ?corp_id=&external_userid=: what
// happened to that fan or customer, and why it is not linked yet.
func (a *api) story(c echo.Context) error {
	q := c.QueryParams()
	unionID, corpID, external := q.Get("unionid"), q.Get("corp_id"), q.Get("external_userid")
	var err error
	switch {
	case unionID != "" && corpID == "" && external == "":
		s, e := a.queries.FanStory(c.Request().Context(), unionID)
		if e == nil {
			return c.JSON(http.StatusOK, s)
		}
		err = e
	case unionID == "" && corpID != "" && external != "":
		s, e := a.queries.CustomerStory(c.Request().Context(), corpID, external)
		if e == nil {
			return c.JSON(http.StatusOK, s)
		}
		err = e
	default:
		return badRequest("give either unionid, or corp_id and external_userid")
	}
	return storeError(err)
}

// activity answers GET /v1/activity?hours=24: events stored per minute and
// links made per hour, for the status page's charts.
func (a *api) activity(c echo.Context) error {
	hours := 24
	if s := c.QueryParam("hours"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 168 {
			return badRequest("hours: must be an integer from 1 to 168")
		}
		hours = n
	}
	act, err := a.queries.Activity(c.Request().Context(), time.Duration(hours)*time.Hour)
	if err != nil {
		return storeError(err)
	}
	return c.JSON(http.StatusOK, act)
}
