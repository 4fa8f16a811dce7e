package handlers

import (
	"context"
	"maps"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/store"
)

// dbStatus is the part of /v1/status read from the database, which costs
// a count of its tables (see snapshot).
type dbStatus struct {
	store    store.Status
	pipeline *store.PipelineStatus
	sweep    *store.Sweep
	outbox   store.OutboxHealth
}

func (s *Server) readStatus(ctx context.Context) (dbStatus, error) {
	var d dbStatus
	var err error
	if d.store, err = s.cfg.Store.Status(ctx); err != nil {
		return d, err
	}
	if s.cfg.Pipeline == nil {
		return d, nil
	}
	ps, err := s.cfg.Pipeline.Status(ctx)
	if err != nil {
		return d, err
	}
	d.pipeline = &ps
	if d.sweep, err = s.cfg.Pipeline.LatestSweep(ctx); err != nil {
		return d, err
	}
	d.outbox, err = s.cfg.Queries.OutboxHealth(ctx)
	return d, err
}

// cachedParam reports whether the caller accepts shared, possibly older
// counts (?cached=1), as the status page does.
func cachedParam(c echo.Context) (bool, error) {
	switch c.QueryParam("cached") {
	case "", "0", "false":
		return false, nil
	case "1", "true":
		return true, nil
	}
	return false, badRequest("cached: must be 1 or 0")
}

func (s *Server) status(c echo.Context) error {
	ctx := c.Request().Context()
	cached, err := cachedParam(c)
	if err != nil {
		return err
	}
	var (
		d  dbStatus
		at time.Time
	)
	if cached {
		d, at, err = s.statusCounts.get(ctx)
	} else {
		d, at, cached, err = s.statusCounts.fresh(ctx)
	}
	if err != nil {
		return err
	}
	st := d.store
	byType := st.EventsByType
	if byType == nil {
		byType = map[string]int64{}
	}
	resp := apiclient.StatusResponse{
		Events: apiclient.EventsStatus{
			Received:       st.EventsReceived,
			Duplicate:      st.EventsDuplicate,
			Ignored:        st.EventsIgnored,
			ByType:         byType,
			FailureReasons: map[string]int64{},
		},
		Callbacks: apiclient.CallbacksStatus{Rejected: s.metrics.rejectedCounts()},
		Queue:     apiclient.QueueStatus{Pending: st.QueuePending},
		WeCom: apiclient.WeComStatus{Calls: map[string]int64{}, Errors: map[string]int64{}, Quota: []apiclient.QuotaWindow{},
			Blocked: []apiclient.BlockedAPI{}},
		Counted: apiclient.CountedStatus{At: at.UTC(), Cached: cached},
	}
	if ps := d.pipeline; ps != nil {
		resp.Events.Resolved, resp.Events.Pending, resp.Events.Unmatched, resp.Events.Failed =
			ps.EventsResolved, ps.EventsPending, ps.EventsUnmatched, ps.EventsFailed
		resp.Events.FailureReasons = ps.FailureReasons
		resp.Fans = apiclient.FansStatus{Registered: ps.FansRegistered, Valid: ps.FansValid, Expiring: ps.FansExpiring, Expired: ps.FansExpired, Queued: ps.FansQueued}
		resp.Links = apiclient.LinksStatus{Total: ps.LinksTotal, Active: ps.LinksActive}
		resp.Reconcile = sweepStatus(d.sweep)
		resp.Webhook = apiclient.WebhookStatus{Configured: s.cfg.Webhook, OutboxHealth: d.outbox}
	}
	if s.cfg.WeCom != nil {
		ws := s.cfg.WeCom.Stats()
		maps.Copy(resp.WeCom.Calls, ws.Calls)
		for code, n := range ws.Errors {
			resp.WeCom.Errors[strconv.Itoa(code)] = n
		}
		for _, b := range ws.Blocked {
			resp.WeCom.Blocked = append(resp.WeCom.Blocked, apiclient.BlockedAPI(b))
		}
	}
	if s.cfg.Quota != nil {
		resp.WeCom.Quota = windowsOut(s.cfg.Quota.Usage())
	}
	return c.JSON(http.StatusOK, resp)
}

// counterValue reads a counter's current value.
func counterValue(c prometheus.Counter) int64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return int64(m.GetCounter().GetValue())
}
