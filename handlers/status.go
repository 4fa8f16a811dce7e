package handlers

import (
	"net/http"

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
}

// EventsStatus counts stored callback events.
type EventsStatus struct {
	// Received counts unique authentic events stored, ignored ones included.
	Received int64 `json:"received"`
	// Duplicate counts authentic callbacks whose event was already stored.
	Duplicate int64 `json:"duplicate"`
	// Ignored counts stored events pendinglink does not act on.
	Ignored int64 `json:"ignored"`
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
	return c.JSON(http.StatusOK, StatusResponse{
		Events: EventsStatus{
			Received:  st.EventsReceived,
			Duplicate: st.EventsDuplicate,
			Ignored:   st.EventsIgnored,
			ByType:    byType,
		},
		Callbacks: CallbacksStatus{Rejected: s.metrics.rejectedCounts()},
		Queue:     QueueStatus{Pending: st.QueuePending},
	})
}

// counterValue reads a counter's current value.
func counterValue(c prometheus.Counter) int64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return int64(m.GetCounter().GetValue())
}
