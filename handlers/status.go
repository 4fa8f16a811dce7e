package handlers

import (
	"maps"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pendinglink/pendinglink/apiclient"
)

func (s *Server) status(c echo.Context) error {
	st, err := s.cfg.Store.Status(c.Request().Context())
	if err != nil {
		return err
	}
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
	}
	if s.cfg.Pipeline != nil {
		ps, err := s.cfg.Pipeline.Status(c.Request().Context())
		if err != nil {
			return err
		}
		resp.Events.Resolved, resp.Events.Pending, resp.Events.Unmatched, resp.Events.Failed =
			ps.EventsResolved, ps.EventsPending, ps.EventsUnmatched, ps.EventsFailed
		resp.Events.FailureReasons = ps.FailureReasons
		resp.Fans = apiclient.FansStatus{Registered: ps.FansRegistered, Valid: ps.FansValid, Expiring: ps.FansExpiring, Expired: ps.FansExpired, Queued: ps.FansQueued}
		resp.Links = apiclient.LinksStatus{Total: ps.LinksTotal, Active: ps.LinksActive}
		sw, err := s.cfg.Pipeline.LatestSweep(c.Request().Context())
		if err != nil {
			return err
		}
		resp.Reconcile = sweepStatus(sw)
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
