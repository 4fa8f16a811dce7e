package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pendinglink/pendinglink/apiclient"
)

const retryUsage = `Usage: pendinglink retry events|fans [flags]

Re-drives work a running pendinglink server gave up on:
  events   failed events (--state failed, the default) get their jobs again;
           --state unmatched looks unmatched customers up again
  fans     failed registrations are queued again

Fix the cause first (the reason is in /v1/status events.failure_reasons or
GET /v1/fans/{unionid}), then try --dry-run to see how many match.

Flags:
`

// retryCommand runs "pendinglink retry events|fans".
func retryCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "events" && args[0] != "fans") {
		fmt.Fprint(stderr, retryUsage)
		return errors.New("retry: say what to retry: events or fans")
	}
	what := args[0]
	fs, server, token := apiCommandFlags("retry "+what, retryUsage, stderr)
	state := fs.String("state", "", `events only: "failed" (default) or "unmatched"`)
	reason := fs.String("reason", "", "only those whose reason contains this text")
	since := fs.String("since", "", "only those received (fans: last changed) at or after this RFC 3339 time")
	until := fs.String("until", "", "only those received (fans: last changed) before this RFC 3339 time")
	dryRun := fs.Bool("dry-run", false, "only count what matches")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if err := noArgs("retry", fs); err != nil {
		return err
	}
	req := apiclient.RetryRequest{State: *state, Reason: *reason, DryRun: *dryRun}
	for _, t := range []struct {
		flag, v string
		out     *time.Time
	}{{"--since", *since, &req.Since}, {"--until", *until, &req.Until}} {
		if t.v == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339, t.v)
		if err != nil {
			return fmt.Errorf("retry: %s: must be an RFC 3339 time such as 2026-11-30T08:00:00Z", t.flag)
		}
		*t.out = v
	}
	cl, err := apiClient("retry", *server, *token, getenv)
	if err != nil {
		return err
	}
	redrive := cl.RetryEvents
	if what == "fans" {
		redrive = cl.RetryFans
	}
	res, err := redrive(ctx, req)
	if err != nil {
		return fmt.Errorf("retry %s: %w", what, err)
	}
	if res.DryRun {
		fmt.Fprintf(stdout, "%d %s match (dry run: nothing changed)\n", res.Matched, what)
	} else {
		fmt.Fprintf(stdout, "%d %s re-queued\n", res.Matched, what)
	}
	return nil
}
