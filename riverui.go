package main

import (
	"fmt"
	"log/slog"
	"net/http"

	"riverqueue.com/riverui"

	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/store"
)

// newJobsUI builds River's web UI over the store's River client, for
// handlers.Config.JobsUI: it lists jobs by state and lets an operator
// retry, cancel or delete them, and pause queues.
//
// The handler is deliberately not started: starting it runs riverui's count
// caches in the background on every instance, every 10 s and a full count
// of river_job every 30 s or more, even when nobody looks (on SQLite, on
// the one write connection). Unstarted, it counts on demand when the UI is
// open, and shows states above 10,000 jobs as estimates.
func newJobsUI(db *store.DB, logger *slog.Logger) (http.Handler, error) {
	ui, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(db.River(), nil),
		Logger:    logger.With("component", "riverui"),
		Prefix:    handlers.JobsUIPrefix,
	})
	if err != nil {
		return nil, fmt.Errorf("riverui: %w", err)
	}
	return ui, nil
}
