package handlers

import (
	"maps"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// StatusResponse is the body of GET /v1/status. Its keys are a contract:
// later versions add keys but never rename these.
type StatusResponse struct {
	Events    EventsStatus    `json:"events"`
	Callbacks CallbacksStatus `json:"callbacks"`
	Queue     QueueStatus     `json:"queue"`
	Fans      FansStatus      `json:"fans"`
	Links     LinksStatus     `json:"links"`
	WeCom     WeComStatus     `json:"wecom"`
}

// FansStatus counts the brand's fans by the state of their pending_ids.
type FansStatus struct {
	// Registered counts fans WeCom issued a pending_id for.
	Registered int64 `json:"registered"`
	// Valid counts fans holding a pending_id that has not expired.
	Valid int64 `json:"valid"`
	// Expiring counts valid fans whose newest pending_id expires within the renew horizon.
	Expiring int64 `json:"expiring"`
	// Expired counts fans whose every pending_id expired.
	Expired int64 `json:"expired"`
}

// LinksStatus counts links.
type LinksStatus struct {
	Total  int64 `json:"total"`
	Active int64 `json:"active"`
}

// WeComStatus reports the WeCom client's calls, errors and quota.
type WeComStatus struct {
	// Calls counts HTTP requests per API (retries included).
	Calls map[string]int64 `json:"calls"`
	// Errors counts answers with a non-zero errcode, by errcode.
	Errors map[string]int64 `json:"errors"`
	// Quota shows each unionid_to_pending_id window.
	Quota []QuotaWindow `json:"quota"`
}

// QuotaWindow is one rolling quota window.
type QuotaWindow struct {
	Window string `json:"window"`
	Used   int64  `json:"used"`
	Limit  int64  `json:"limit"`
}

// EventsStatus counts stored callback events.
type EventsStatus struct {
	// Received counts unique authentic events stored, ignored ones included.
	Received int64 `json:"received"`
	// Duplicate counts authentic callbacks whose event was already stored.
	Duplicate int64 `json:"duplicate"`
	// Ignored counts stored events pendinglink does not act on.
	Ignored int64 `json:"ignored"`
	// Resolved counts events whose customers were resolved (matched or not
	// yet), Pending those still being worked, Unmatched those WeCom had no
	// pending_id for, Failed those that gave up (FailureReasons says why).
	Resolved       int64            `json:"resolved"`
	Pending        int64            `json:"pending"`
	Unmatched      int64            `json:"unmatched"`
	Failed         int64            `json:"failed"`
	FailureReasons map[string]int64 `json:"failure_reasons"`
	// ByType counts stored events by kind (change type, chat update or "ignored").
	ByType map[string]int64 `json:"by_type"`
}

// CallbacksStatus counts rejected callbacks since the process started:
// rejections write nothing, so they are not in the database.
type CallbacksStatus struct {
	Rejected map[string]int64 `json:"rejected"`
}

// QueueStatus describes the job queue.
type QueueStatus struct {
	// Pending counts jobs not yet finished (available, scheduled, retrying, running).
	Pending int64 `json:"pending"`
}

func (s *Server) status(c echo.Context) error {
	st, err := s.cfg.Store.Status(c.Request().Context())
	if err != nil {
		return err
	}
	byType := st.EventsByType
	if byType == nil {
		byType = map[string]int64{}
	}
	resp := StatusResponse{
		Events: EventsStatus{
			Received:       st.EventsReceived,
			Duplicate:      st.EventsDuplicate,
			Ignored:        st.EventsIgnored,
			ByType:         byType,
			FailureReasons: map[string]int64{},
		},
		Callbacks: CallbacksStatus{Rejected: s.metrics.rejectedCounts()},
		Queue:     QueueStatus{Pending: st.QueuePending},
		WeCom:     WeComStatus{Calls: map[string]int64{}, Errors: map[string]int64{}, Quota: []QuotaWindow{}},
	}
	if s.cfg.Pipeline != nil {
		ps, err := s.cfg.Pipeline.Status(c.Request().Context())
		if err != nil {
			return err
		}
		resp.Events.Resolved, resp.Events.Pending, resp.Events.Unmatched, resp.Events.Failed =
			ps.EventsResolved, ps.EventsPending, ps.EventsUnmatched, ps.EventsFailed
		resp.Events.FailureReasons = ps.FailureReasons
		resp.Fans = FansStatus{Registered: ps.FansRegistered, Valid: ps.FansValid, Expiring: ps.FansExpiring, Expired: ps.FansExpired}
		resp.Links = LinksStatus{Total: ps.LinksTotal, Active: ps.LinksActive}
	}
	if s.cfg.WeCom != nil {
		ws := s.cfg.WeCom.Stats()
		maps.Copy(resp.WeCom.Calls, ws.Calls)
		for code, n := range ws.Errors {
			resp.WeCom.Errors[strconv.Itoa(code)] = n
		}
	}
	if s.cfg.Quota != nil {
		for _, u := range s.cfg.Quota.Usage() {
			resp.WeCom.Quota = append(resp.WeCom.Quota, QuotaWindow{Window: u.Length.String(), Used: u.Used, Limit: u.Limit})
		}
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
