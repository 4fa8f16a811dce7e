package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
)

// api serves the /v1 routes that need the pipeline.
type api struct {
	pipeline Pipeline
	queries  Queries
	logger   *slog.Logger
	// forecasts answers GET /v1/quota?cached=1, activities GET
	// /v1/activity?cached=1 (one per window asked for).
	forecasts  *snapshot[pipeline.Forecast]
	now        func() time.Time
	mu         sync.Mutex
	activities map[time.Duration]*snapshot[store.Activity]
}

func (a *api) mount(g *echo.Group) {
	g.POST("/fans", a.registerFan)
	g.POST("/fans/batch", a.registerFans)
	g.GET("/fans/:unionid", a.getFan)
	g.PATCH("/fans/:unionid", a.patchFan)
	g.GET("/links", a.findLinks)
	g.GET("/customers/:corp_id/:external_userid", a.getCustomer)
	g.POST("/reconcile", a.reconcile)
	g.GET("/quota", a.quota)
	g.POST("/events/retry", a.retry(Pipeline.RetryEvents, "events"))
	g.POST("/fans/retry", a.retry(Pipeline.RetryFans, "fans"))
	g.GET("/story", a.story)
	g.GET("/activity", a.activity)
}

// retry re-drives what the body selects (failed events, unmatched events
// or failed fans): 200 {"matched": n, "dry_run": …}. With dry_run nothing
// changes.
func (a *api) retry(redrive func(Pipeline, context.Context, store.RetryFilter) (int64, error), what string) echo.HandlerFunc {
	return func(c echo.Context) error {
		var in apiclient.RetryRequest
		if c.Request().ContentLength != 0 {
			if err := decodeJSON(c, &in); err != nil {
				return err
			}
		}
		if what == "fans" && in.State != "" {
			return badRequest("state: fans are always the failed ones")
		}
		f := store.RetryFilter{State: in.State, Reason: in.Reason, Since: in.Since, Until: in.Until, DryRun: in.DryRun}
		n, err := redrive(a.pipeline, c.Request().Context(), f)
		if err != nil {
			return storeError(err)
		}
		a.logger.Info("retry requested", "what", what, "state", in.State, "reason", in.Reason, "matched", n, "dry_run", in.DryRun)
		return c.JSON(http.StatusOK, apiclient.RetryResponse{Matched: n, DryRun: in.DryRun})
	}
}

// reconcile starts a sweep: 202 with the sweep, which may be one already
// running (then "started" is false). The body is optional.
func (a *api) reconcile(c echo.Context) error {
	var in apiclient.ReconcileRequest
	if c.Request().ContentLength != 0 {
		if err := decodeJSON(c, &in); err != nil {
			return err
		}
	}
	s, started, err := a.pipeline.Reconcile(c.Request().Context(), in.RegisteredBefore)
	if err != nil {
		return storeError(err)
	}
	a.logger.Info("reconcile sweep requested", "sweep", s.ID, "started", started, "fans", s.Remaining)
	return c.JSON(http.StatusAccepted, apiclient.ReconcileResponse{Started: started, Sweep: sweepStatus(s)})
}

// sweepStatus is the wire form of a sweep.
func sweepStatus(s *store.Sweep) apiclient.ReconcileStatus {
	if s == nil {
		return apiclient.ReconcileStatus{}
	}
	out := apiclient.ReconcileStatus{
		Running: s.Running(), ID: s.ID, Reason: s.Reason, Checked: s.Checked, Linked: s.Linked, Remaining: s.Remaining,
		RegisteredBefore: &s.RegisteredBefore, StartedAt: &s.StartedAt, FinishedAt: s.FinishedAt,
	}
	return out
}

// badRequest is a 400 with a JSON error naming what is wrong.
func badRequest(msg string) error { return echo.NewHTTPError(http.StatusBadRequest, msg) }

// storeError maps store sentinels to statuses; anything else is internal.
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrInvalid):
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	case errors.Is(err, store.ErrNotFound):
		return echo.NewHTTPError(http.StatusNotFound, "not found")
	}
	return err
}

// maxJSONBody caps a /v1 request body; a full fan batch is far smaller.
const maxJSONBody = 1 << 20

// decodeJSON decodes the body, which must be exactly one JSON value, into v:
// 413 over maxJSONBody, 400 for anything else wrong, a string that is not
// text (checkText) included.
func decodeJSON(c echo.Context, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(c.Response(), c.Request().Body, maxJSONBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = fmt.Errorf("trailing data after the JSON value: %w", terr)
		}
	}
	var (
		tooLarge *http.MaxBytesError
		badTime  *time.ParseError
	)
	switch {
	case err == nil:
		return checkJSONText(reflect.ValueOf(v), "")
	case errors.As(err, &tooLarge):
		return echo.NewHTTPError(http.StatusRequestEntityTooLarge, "JSON body larger than "+strconv.Itoa(maxJSONBody)+" bytes")
	case errors.As(err, &badTime):
		// encoding/json does not say which field a time came from; the
		// value itself, quoted, points at it.
		return badRequest("invalid JSON body: times must be RFC 3339 such as 2026-01-02T15:04:05Z: " + err.Error())
	}
	return badRequest("invalid JSON body: " + err.Error())
}

// registerFan registers one fan: 201 when WeCom issued a pending_id just
// now, 202 when the registration is queued, 200 when the fan already holds a
// live pending_id, 422 when WeCom refuses it for good.
func (a *api) registerFan(c echo.Context) error {
	var in store.FanInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if err := in.ValidateAt(a.now()); err != nil {
		return storeError(err)
	}
	ctx := c.Request().Context()
	reg, err := a.pipeline.Register(ctx, in)
	if errors.Is(err, pipeline.ErrRefused) {
		return echo.NewHTTPError(http.StatusUnprocessableEntity, err.Error())
	}
	if err != nil {
		return storeError(err)
	}
	status := map[pipeline.Registration]int{
		pipeline.AlreadyRegistered: http.StatusOK,
		pipeline.Registered:        http.StatusCreated,
		pipeline.Queued:            http.StatusAccepted,
	}[reg]
	fan, err := a.queries.FindFan(ctx, in.UnionID)
	if err != nil {
		return storeError(err)
	}
	return c.JSON(status, apiclient.FanResponse{FanDetail: fan, Queued: reg == pipeline.Queued})
}

// registerFans queues up to MaxFansPerBatch fans as bulk work. Fans already
// holding a live pending_id, or already queued, are skipped, so re-sending a
// batch is harmless.
func (a *api) registerFans(c echo.Context) error {
	var in []store.FanInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if len(in) == 0 || len(in) > apiclient.MaxFansPerBatch {
		return badRequest("send between 1 and " + strconv.Itoa(apiclient.MaxFansPerBatch) + " fans")
	}
	for i := range in {
		if err := in[i].ValidateAt(a.now()); err != nil {
			return badRequest("fan " + strconv.Itoa(i) + ": " + err.Error())
		}
	}
	res, err := a.pipeline.RegisterBatch(c.Request().Context(), in)
	if err != nil {
		return storeError(err)
	}
	return c.JSON(http.StatusAccepted, apiclient.BatchResponse{Accepted: len(in), Queued: res.Queued, Skipped: res.Skipped})
}

func (a *api) getFan(c echo.Context) error {
	fan, err := a.queries.FindFan(c.Request().Context(), c.Param("unionid"))
	if err != nil {
		return storeError(err)
	}
	return c.JSON(http.StatusOK, apiclient.FanResponse{FanDetail: fan})
}

// patchFan changes a fan's priority, last-active time or both:
// {"priority": 1…100, "last_active_at": RFC 3339}; 200 with the fan.
func (a *api) patchFan(c echo.Context) error {
	var in apiclient.FanPatch
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if in.Priority == nil && in.LastActiveAt == nil {
		return badRequest("priority (from 1 to 100) or last_active_at: one is required")
	}
	unionID := c.Param("unionid")
	if err := a.pipeline.UpdateFan(c.Request().Context(), unionID, store.FanUpdate{Priority: in.Priority, LastActive: in.LastActiveAt}); err != nil {
		return storeError(err)
	}
	return a.getFan(c)
}

func (a *api) findLinks(c echo.Context) error {
	q := c.QueryParams()
	f := store.LinkFilter{UnionID: q.Get("unionid"), CorpID: q.Get("corp_id"), ExternalUserID: q.Get("external_userid"), Limit: 100}
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return badRequest("since: must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
		}
		f.Since = t
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return badRequest("limit: must be an integer from 1 to 1000")
		}
		f.Limit = n
	}
	if s := q.Get("cursor"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return badRequest("cursor: must be a next_cursor from an earlier page")
		}
		f.BeforeID = n
	}
	links, err := a.queries.FindLinks(c.Request().Context(), f)
	if err != nil {
		return storeError(err)
	}
	resp := apiclient.LinksResponse{Links: links}
	if links == nil {
		resp.Links = []store.Link{}
	}
	if len(links) == f.Limit {
		resp.NextCursor = strconv.FormatInt(links[len(links)-1].ID, 10)
	}
	return c.JSON(http.StatusOK, resp)
}

func (a *api) getCustomer(c echo.Context) error {
	cust, err := a.queries.FindCustomer(c.Request().Context(), c.Param("corp_id"), c.Param("external_userid"))
	if err != nil {
		return storeError(err)
	}
	return c.JSON(http.StatusOK, cust)
}

// quota answers GET /v1/quota from the pipeline's forecast.
func (a *api) quota(c echo.Context) error {
	cached, err := cachedParam(c)
	if err != nil {
		return err
	}
	var f pipeline.Forecast
	if cached {
		f, _, err = a.forecasts.get(c.Request().Context())
	} else {
		f, _, _, err = a.forecasts.fresh(c.Request().Context())
	}
	if err != nil {
		return err
	}
	resp := apiclient.QuotaResponse{
		LivePendingIDs: f.LivePendingIDs, ExpiringWithin7Days: f.ExpiringWithin7Days, ExpiringUnrenewed7Days: f.ExpiringUnrenewed, SustainableLiveFans: f.Sustainable,
		OverCapacity:  f.OverCapacity,
		APIs:          []apiclient.QuotaAPI{},
		Registrations: make([]apiclient.QuotaBacklog, 0, len(f.Registrations)),
		ByPriority:    make([]apiclient.QuotaPriorityBacklog, 0, len(f.ByPriority)),
		Checks:        backlogOut(f.Checks),
		Renewal:       renewalOut(f.Renewal),
	}
	for _, b := range f.ByPriority {
		pb := backlogOut(pipeline.BacklogItem{Count: b.Count, Done: b.Done})
		resp.ByPriority = append(resp.ByPriority, apiclient.QuotaPriorityBacklog{Priority: b.Priority, Count: b.Count, DoneAt: pb.DoneAt})
	}
	for _, api := range []struct {
		name string
		us   []quota.Usage
	}{{wecom.APIUnionIDToPendingID, f.Pending}, {wecom.APIUnionIDToExternalUserID, f.Existing}} {
		if api.us == nil {
			continue
		}
		resp.APIs = append(resp.APIs, apiclient.QuotaAPI{API: api.name, Windows: windowsOut(api.us)})
	}
	for _, b := range f.Registrations {
		resp.Registrations = append(resp.Registrations, backlogOut(b))
	}
	return c.JSON(http.StatusOK, resp)
}

func renewalOut(p pipeline.RenewalPolicy) apiclient.QuotaRenewal {
	out := apiclient.QuotaRenewal{Mode: string(p.Mode), Policy: apiclient.RenewalAtExpiry, LearnAfter: p.LearnAfter,
		Observations: apiclient.RenewalObservations{SameID: p.Observed.SameID, NewID: p.Observed.NewID}}
	if p.Early {
		out.Policy = apiclient.RenewalEarly
	}
	return out
}

func backlogOut(b pipeline.BacklogItem) apiclient.QuotaBacklog {
	out := apiclient.QuotaBacklog{Name: b.Name, Count: b.Count}
	if !b.Done.IsZero() {
		done := b.Done
		out.DoneAt = &done
	}
	return out
}

// windowsOut is the wire form of quota windows, as /v1/status shows them.
func windowsOut(us []quota.Usage) []apiclient.QuotaWindow {
	out := make([]apiclient.QuotaWindow, 0, len(us))
	for _, u := range us {
		w := apiclient.QuotaWindow{Window: u.Length.String(), Used: u.Used, Limit: u.Limit, ExternalUsage: u.External}
		if !u.SpentUntil.IsZero() {
			until := u.SpentUntil
			w.SpentUntil = &until
		}
		out = append(out, w)
	}
	return out
}
