package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/pendinglink/pendinglink/check"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
)

// checkOptions are the seams tests use; the command passes none.
type checkOptions struct {
	// Now is the clock of the checks. Defaults to time.Now.
	Now func() time.Time
}

// checkCommand runs "pendinglink check": with serve's configuration (the
// same variables and flags), it tests the deployment and prints a
// checklist. It fails when a check fails, so that the exit code says
// whether everything needed works.
func checkCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, opts checkOptions) error {
	var callbackURL string
	cfg, err := loadConfigWith("check", args, getenv, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&callbackURL, "url", "", "the public callback URL (https://<host>/wecom/callback): make WeCom's verification request to it from here")
	})
	if err != nil {
		return err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	pending, external := quotaConfigs(cfg, nil, opts.Now)
	ccfg := check.Config{
		WeCom:         wecomConfig(cfg),
		CallbackToken: cfg.CallbackToken, CallbackAESKey: cfg.CallbackAESKey,
		DB:          cfg.DB,
		Quotas:      []quota.Config{pending, external},
		CallbackURL: callbackURL,
		Now:         opts.Now,
	}
	if cfg.WebhookURL != "" {
		ccfg.Webhook = &pipeline.Webhook{URL: cfg.WebhookURL, Secret: cfg.WebhookSecret}
	}
	fmt.Fprintf(stdout, "pendinglink check %s: corp %s, app %d, WeCom API %s, database %s\n",
		buildVersion(), cfg.CorpID, cfg.AgentID, cfg.APIBase, store.RedactDSN(cfg.DB))
	report := check.Run(ctx, ccfg)
	if err := report.Print(stdout); err != nil {
		return err
	}
	if n := report.Failed(); n > 0 {
		return fmt.Errorf("check: %d failed", n)
	}
	return nil
}
