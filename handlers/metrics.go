package handlers

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pendinglink/pendinglink/wecom"
)

// Rejection reasons: the keys of callbacks.rejected in /v1/status and the
// reason label of pendinglink_callbacks_rejected_total.
const (
	ReasonSignature = "signature"
	ReasonDecrypt   = "decrypt"
	ReasonReceiveID = "receive_id"
	ReasonTooLarge  = "too_large"
	ReasonStale     = "stale"
	// ReasonBusy: too many callbacks were being read at once (503).
	ReasonBusy = "busy"
)

var rejectReasons = []string{ReasonSignature, ReasonDecrypt, ReasonReceiveID, ReasonTooLarge, ReasonStale, ReasonBusy}

type metrics struct {
	rejected   *prometheus.CounterVec
	accepted   *prometheus.CounterVec
	duplicates prometheus.Counter
	storeFail  prometheus.Counter
	ackSeconds prometheus.Histogram
}

// blockedGauge exports how many WeCom APIs a configuration fault blocks
// right now (see wecom.BlockedError): non-zero means work is waiting for an
// operator's fix in the WeCom console, which /v1/status names.
func blockedGauge(wc interface{ Stats() wecom.Stats }) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pendinglink_wecom_blocked_apis",
		Help: "WeCom APIs blocked by a configuration fault (60020, 48002, 301002, 670001, …), per API and dealer.",
	}, func() float64 { return float64(len(wc.Stats().Blocked)) })
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pendinglink_callbacks_rejected_total",
			Help: "Callbacks rejected before anything was stored, by reason.",
		}, []string{"reason"}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pendinglink_events_stored_total",
			Help: "Authentic callback events stored for the first time, by kind.",
		}, []string{"kind"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pendinglink_events_duplicate_total",
			Help: "Authentic callbacks whose event was already stored (WeCom retries).",
		}),
		storeFail: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pendinglink_callbacks_store_errors_total",
			Help: "Authentic callbacks answered 503 because the store could not commit.",
		}),
		ackSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pendinglink_callback_ack_seconds",
			Help:    "Time from request start to the callback's answer.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
	}
	for _, c := range []prometheus.Collector{m.rejected, m.accepted, m.duplicates, m.storeFail, m.ackSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("handlers: register metrics: %w", err)
		}
	}
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r) // export zeros so dashboards see every reason
	}
	return m, nil
}

// rejectedCounts reads the rejection counters back for /v1/status.
func (m *metrics) rejectedCounts() map[string]int64 {
	out := make(map[string]int64, len(rejectReasons))
	for _, r := range rejectReasons {
		out[r] = counterValue(m.rejected.WithLabelValues(r))
	}
	return out
}
