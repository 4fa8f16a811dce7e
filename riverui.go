package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"riverqueue.com/riverui"

	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/store"
)

// newJobsUI builds River's web UI over the store's River client, for
// handlers.Config.JobsUI: it lists jobs by state and lets an operator
// retry, cancel or delete them, and pause queues. Its background caches
// run until ctx ends.
func newJobsUI(ctx context.Context, db *store.DB, logger *slog.Logger) (http.Handler, error) {
	ui, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(db.River(), nil),
		Logger:    logger.With("component", "riverui"),
		Prefix:    handlers.JobsUIPrefix,
	})
	if err != nil {
		return nil, fmt.Errorf("riverui: %w", err)
	}
	if err := ui.Start(ctx); err != nil {
		return nil, fmt.Errorf("riverui: start: %w", err)
	}
	return ui, nil
}
