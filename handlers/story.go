package handlers

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/pendinglink/pendinglink/store"
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
	cached, err := cachedParam(c)
	if err != nil {
		return err
	}
	window := time.Duration(hours) * time.Hour
	var act store.Activity
	if cached {
		act, _, err = a.activitySnapshot(window).get(c.Request().Context())
	} else {
		act, err = a.queries.Activity(c.Request().Context(), window)
	}
	if err != nil {
		return storeError(err)
	}
	return c.JSON(http.StatusOK, act)
}

// activitySnapshot is the shared snapshot of one window's activity: a
// day of events at 2 million a day takes seconds to bucket.
func (a *api) activitySnapshot(window time.Duration) *snapshot[store.Activity] {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.activities[window]
	if !ok {
		s = newSnapshot("activity", a.now, a.logger, func(ctx context.Context) (store.Activity, error) {
			return a.queries.Activity(ctx, window)
		})
		a.activities[window] = s
	}
	return s
}
