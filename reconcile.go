package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/pendinglink/pendinglink/apiclient"
)

const reconcileUsage = `Usage: pendinglink reconcile [flags]

Asks a running pendinglink server to check its registered fans without an
active link against unionid_to_external_userid (newest first) and link the
customers the dealers have: those added while the service could not hear
their callbacks, or before it existed. The sweep runs in the server within
that API's quota (20,000/hour, 240,000/day) and resumes after a restart; a
sweep already running is reported instead of a new one.

The server starts such a sweep by itself after a start that finds no instance
ran for PENDINGLINK_RECONCILE_AFTER_DOWNTIME.

Flags:
`

// reconcileCommand runs "pendinglink reconcile".
func reconcileCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, server, token := apiCommandFlags("reconcile", reconcileUsage, stderr)
	before := fs.String("registered-before", "", "only fans registered before this RFC 3339 time (default: now)")
	wait := fs.Bool("wait", false, "follow the sweep until it finishes, printing its progress")
	every := fs.Duration("every", 10*time.Second, "with --wait, how often to print progress")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs("reconcile", fs); err != nil {
		return err
	}
	var cutoff time.Time
	if *before != "" {
		t, err := time.Parse(time.RFC3339, *before)
		if err != nil {
			return errors.New("reconcile: --registered-before: must be an RFC 3339 time such as 2026-11-30T08:00:00Z")
		}
		cutoff = t
	}
	cl, err := apiClient("reconcile", *server, *token, getenv)
	if err != nil {
		return err
	}
	rr, err := cl.Reconcile(ctx, cutoff)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	verb := "started"
	if !rr.Started {
		verb = "already running"
	}
	fmt.Fprintf(stdout, "sweep %d %s: %d fans to check\n", rr.Sweep.ID, verb, rr.Sweep.Remaining)
	if !*wait {
		return nil
	}
	t := time.NewTicker(max(*every, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		st, err := cl.Status(ctx)
		if err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		r := st.Reconcile
		fmt.Fprintf(stdout, "sweep %d: checked %d, linked %d, remaining %d\n", r.ID, r.Checked, r.Linked, r.Remaining)
		if r.ID != rr.Sweep.ID || !r.Running {
			fmt.Fprintln(stdout, "sweep finished")
			return nil
		}
	}
}

// apiCommandFlags is the flag set of a command that calls a running server:
// errors and -h go to stderr, -h prints usage before the flags, and it has
// the --server and --token flags (defaults applied by resolveServer after
// parsing, so that -h never prints the token).
func apiCommandFlags(name, usage string, stderr io.Writer) (fs *flag.FlagSet, server, token *string) {
	fs = flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	server = fs.String("server", "", "pendinglink base URL (default $PENDINGLINK_URL or http://127.0.0.1:8080)")
	token = fs.String("token", "", "admin token (default $PENDINGLINK_ADMIN_TOKEN; prefer the variable: flags show in ps)")
	return fs, server, token
}

// resolveServer applies the environment's defaults to the server flags and
// checks them.
func resolveServer(cmd, server, token string, getenv func(string) string) (string, string, error) {
	if server == "" {
		server = getenv("PENDINGLINK_URL")
	}
	if server == "" {
		server = "http://127.0.0.1:8080"
	}
	if token == "" {
		token = getenv("PENDINGLINK_ADMIN_TOKEN")
	}
	if token == "" {
		return "", "", fmt.Errorf("%s: PENDINGLINK_ADMIN_TOKEN: required (the server's admin token; or pass --token)", cmd)
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", fmt.Errorf("%s: --server/PENDINGLINK_URL: must be an http(s) URL such as http://127.0.0.1:8080", cmd)
	}
	return strings.TrimRight(server, "/"), token, nil
}

// apiClient returns a client of the server the flags name.
func apiClient(cmd, server, token string, getenv func(string) string) (*apiclient.Client, error) {
	server, token, err := resolveServer(cmd, server, token, getenv)
	if err != nil {
		return nil, err
	}
	return &apiclient.Client{BaseURL: server, Token: token}, nil
}
