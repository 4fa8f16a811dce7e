package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/riverqueue/river"

	"github.com/pendinglink/pendinglink/crypto"
	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
)

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig("serve", args, getenv, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	a, err := startApp(ctx, cfg, logger, appOptions{})
	if err != nil {
		return err
	}
	return a.wait(ctx)
}

// app is one running pendinglink: store, workers, HTTP server. serve and the
// demo build it the same way.
type app struct {
	cfg       config
	logger    *slog.Logger
	db        *store.DB
	client    *wecom.Client
	coalescer *pipeline.Coalescer
	// stopRefresh ends the background loops: the daily allow-list refresh
	// and the heartbeat.
	stopRefresh context.CancelFunc
	// stopRegistrar ends the registrar loop; registrarDone closes when it
	// has returned.
	stopRegistrar context.CancelFunc
	registrarDone chan struct{}
	httpSrv       *http.Server
	addr          net.Addr
	serveErr      chan error
}

// appOptions are the seams the demo and tests use; serve passes none.
type appOptions struct {
	// HTTPClient talks to WeCom. Defaults to the wecom client's own.
	HTTPClient *http.Client
	// Now is the clock of the store, the WeCom client and the quota.
	Now func() time.Time
}

// startApp wires store → WeCom client → workers → River → handlers →
// listener and starts serving. On error everything already opened is closed
// again.
func startApp(ctx context.Context, cfg config, logger *slog.Logger, opts appOptions) (_ *app, err error) {
	logger.Info("starting pendinglink", "version", buildVersion(), "config", cfg)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	cr, err := crypto.New(cfg.CallbackToken, cfg.CallbackAESKey)
	if err != nil {
		// crypto errors never carry the key; name the variables to fix.
		return nil, fmt.Errorf("WECOM_CALLBACK_TOKEN / WECOM_CALLBACK_AES_KEY: %w (the key must be the 43-character EncodingAESKey from the WeCom console)", err)
	}
	policy, err := handlers.NewReceiveIDPolicy(cfg.ReceiveIDCheck, cfg.CorpID, cfg.DownstreamCorps)
	if err != nil {
		return nil, fmt.Errorf("WECOM_RECEIVE_ID_CHECK: %w", err)
	}

	workers := river.NewWorkers()
	// The pipeline handles River's job errors, but needs the open store;
	// no job runs before Start, by which time it is set.
	jobErrors := &pipelineErrors{}
	db, err := store.Open(ctx, store.Config{
		DSN: cfg.DB, MaxConns: int(cfg.DBMaxConns), InstanceID: cfg.InstanceID, Logger: logger, Now: opts.Now, Workers: workers, ErrorHandler: jobErrors,
		Jobs:   pipeline.Policy{Notify: cfg.WebhookURL != ""},
		Queues: pipeline.Queues(int(cfg.ResolveWorkers)),
		// One instance at a time resolves, so a burst spread over several
		// instances still fills each batch call as one instance would.
		LeasedQueues: []string{pipeline.QueueResolve},
		PeriodicJobs: pipeline.PeriodicJobs(cfg.RenewInterval, cfg.ReconcileInterval),
		// River's default fetch cooldown (100 ms) is kept on purpose: fetching
		// more often starved the callback path of the single write connection
		// (ack p99 of seconds at 3,000/s, see BENCHMARKS.md) and fetched
		// resolve jobs in smaller groups, so batches were emptier.
		SoftStopTimeout: cfg.ShutdownTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("PENDINGLINK_DB: open database: %w", err)
	}
	var client *wecom.Client
	var coalescer *pipeline.Coalescer
	defer func() {
		if err != nil {
			db.Close()
			if coalescer != nil {
				coalescer.Close()
			}
			if client != nil {
				client.Close()
			}
		}
	}()

	pendingCfg, externalCfg := quotaConfigs(cfg, db, opts.Now)
	pendingQuota, err := quota.New(ctx, pendingCfg)
	if err != nil {
		return nil, fmt.Errorf("quota: %w", err)
	}
	externalQuota, err := quota.New(ctx, externalCfg)
	if err != nil {
		return nil, fmt.Errorf("quota: %w", err)
	}
	wcfg := wecomConfig(cfg)
	wcfg.HTTPClient, wcfg.Logger, wcfg.Now = opts.HTTPClient, logger, opts.Now
	wcfg.PendingIDQuota, wcfg.ExternalUserIDQuota, wcfg.TokenStore = pendingQuota, externalQuota, tokenStore{db}
	client, err = wecom.NewClient(wcfg)
	if err != nil {
		return nil, fmt.Errorf("wecom client: %w", err)
	}
	coalescer, err = pipeline.NewCoalescer(client, pipeline.CoalescerConfig{
		Window: cfg.ResolveWindow, MaxWait: cfg.ResolveMaxWait, Logger: logger,
		// A backlog that fills every resolve worker again (a burst, or a
		// restart after an outage): let a partial group wait for it. Under a
		// steady load the workers keep up and groups flush at Window.
		Backlog: func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			more, err := db.HasAvailableJobs(ctx, pipeline.QueueResolve, int(cfg.ResolveWorkers)/2)
			return err == nil && more
		},
	})
	if err != nil {
		return nil, fmt.Errorf("PENDINGLINK_RESOLVE_WINDOW: %w", err)
	}
	// The receive-id allow-list also takes every dealer that confirmed the app
	// share (protocol reference §1.6): now, and daily in the background.
	refreshCtx, stopRefresh := context.WithCancel(context.WithoutCancel(ctx))
	var refreshReceiveIDs func(context.Context) error
	if cfg.ReceiveIDCheck == handlers.ReceiveIDAllowlist {
		refreshReceiveIDs = func(ctx context.Context) error { return allowSharedCorps(ctx, client, policy) }
		keepAllowlist(refreshCtx, refreshReceiveIDs, logger)
	}
	defer func() {
		if err != nil {
			stopRefresh()
		}
	}()
	pcfg := pipeline.Config{
		Store: db, WeCom: client, Coalescer: coalescer, Logger: logger,
		RenewBefore: cfg.RenewBefore, RenewInterval: cfg.RenewInterval, RenewEarly: cfg.RenewEarly, RenewLearnAfter: int(cfg.RenewLearnAfter),
		Quota: pendingQuota, Now: opts.Now,
		CheckExisting: cfg.Backfill, ExistingQuota: externalQuota, NotCustomerYetDelay: cfg.NotCustomerYetDelay,
		RegisterConcurrency: int(cfg.RegisterConcurrency),
	}
	if cfg.WebhookURL != "" {
		pcfg.Webhook = &pipeline.Webhook{URL: cfg.WebhookURL, Secret: cfg.WebhookSecret}
	}
	pl, err := pipeline.New(pcfg)
	if err != nil {
		return nil, err
	}
	pl.AddWorkers(workers)
	jobErrors.ErrorHandler = pl

	jobsUI, err := newJobsUI(db, logger)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := handlers.New(handlers.Config{
		Store:        db,
		Crypt:        cr,
		ReceiveIDs:   policy,
		AdminToken:   cfg.AdminToken,
		Logger:       logger,
		Registerer:   reg,
		Gatherer:     reg,
		CallbackPath: cfg.CallbackPath,
		BodyLimit:    cfg.CallbackMaxBytes,
		MaxAge:       cfg.CallbackMaxAge,
		Now:          opts.Now,
		Pipeline:     pl,
		WeCom:        client,
		Quota:        pendingQuota,
		Gauges:       pl,
		JobsUI:       jobsUI,
		Webhook:      cfg.WebhookURL != "",

		RefreshReceiveIDs: refreshReceiveIDs,
		TrustedProxies:    cfg.TrustedProxies,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("PENDINGLINK_ADDR: %w", err)
	}
	if err := watchDowntime(refreshCtx, db, cfg, logger, opts.Now); err != nil {
		ln.Close()
		return nil, err
	}
	if err := db.Start(ctx); err != nil {
		ln.Close()
		return nil, fmt.Errorf("start job workers: %w", err)
	}
	a := &app{
		cfg: cfg, logger: logger, db: db, client: client, coalescer: coalescer, stopRefresh: stopRefresh,
		addr: ln.Addr(), serveErr: make(chan error, 1), registrarDone: make(chan struct{}),
		httpSrv: &http.Server{
			Handler:           srv,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
	}
	// The registrar runs on one instance of a cluster at a time (a lease).
	regCtx, stopRegistrar := context.WithCancel(context.WithoutCancel(ctx))
	a.stopRegistrar = stopRegistrar
	go func() {
		defer close(a.registrarDone)
		pl.RunRegistrar(regCtx)
	}()
	go func() { a.serveErr <- a.httpSrv.Serve(ln) }()
	logger.Info("listening", "addr", a.addr.String(), "callback_path", cfg.CallbackPath)
	return a, nil
}

// wait serves until ctx is cancelled (SIGTERM) or the server fails, then
// shuts down: in-flight requests finish, then the job workers stop, then the
// database closes.
func (a *app) wait(ctx context.Context) error {
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-a.serveErr:
	}
	return errors.Join(serveErr, a.close())
}

func (a *app) close() error {
	a.logger.Info("shutting down", "timeout", a.cfg.ShutdownTimeout)
	a.stopRefresh()
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.shutdown(ctx) }()
	select {
	case err := <-done:
		a.logger.Info("stopped")
		return err
	case <-ctx.Done():
		// PENDINGLINK_SHUTDOWN_TIMEOUT is a promise to the supervisor. What
		// is cut off is safe: acknowledged callbacks are committed, and jobs
		// left running are resumed at the next start.
		a.logger.Warn("shutdown timeout: stopping with work in flight; it resumes at the next start")
		return nil
	}
}

// shutdown stops serving, then the job workers, then the WeCom calls they
// were waiting for, then the database.
func (a *app) shutdown(ctx context.Context) error {
	var errs []error
	if err := a.httpSrv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	// A registration cut off here stays queued: the next registrar does it.
	a.stopRegistrar()
	select {
	case <-a.registrarDone:
	case <-ctx.Done():
	}
	// River stops before the Coalescer closes, so running resolve jobs get
	// their answers instead of ErrCoalescerClosed.
	if err := a.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close database: %w", err))
	}
	if err := a.coalescer.Shutdown(ctx); err != nil {
		a.logger.Warn("WeCom calls still in flight at shutdown were cancelled", "err", err)
	}
	a.client.Close()
	return errors.Join(errs...)
}

// wecomConfig is the WeCom client's configuration from cfg; serve adds its
// store, quotas and logger, check uses it as is.
func wecomConfig(cfg config) wecom.Config {
	return wecom.Config{
		BaseURL: cfg.APIBase, CorpID: cfg.CorpID, AgentID: cfg.AgentID, CorpSecret: cfg.CorpSecret,
		PendingToken: cfg.PendingToken, TokenRefreshInterval: cfg.TokenRefresh,
	}
}

// quotaConfigs are the limiters of unionid_to_pending_id and
// unionid_to_external_userid, counted in st; check reads them the same way.
func quotaConfigs(cfg config, st quota.Store, now func() time.Time) (pending, external quota.Config) {
	pending = quota.Config{
		Key: wecom.PendingIDQuotaKey(cfg.CorpID), Windows: wecom.PendingIDWindows(cfg.QuotaHour, cfg.QuotaDay, cfg.QuotaMonth),
		Store: st, Now: now, Smooth: true, Sustained: cfg.QuotaSustained, Reserve: int(cfg.QuotaReserve), Floor: int(cfg.QuotaFloor),
	}
	external = quota.Config{
		Key: wecom.ExternalUserIDQuotaKey(cfg.CorpID), Windows: wecom.ExternalUserIDWindows(cfg.ExternalHour, cfg.ExternalDay),
		Store: st, Now: now, Smooth: true, Floor: int(cfg.QuotaFloor),
	}
	return pending, external
}

// tokenStore lets the instances sharing a PostgreSQL database share WeCom
// access tokens: one fetches, the others wait and use it.
type tokenStore struct{ db *store.DB }

func (s tokenStore) Token(ctx context.Context, key, reject string, now time.Time, fetch func(context.Context) (wecom.SharedToken, error)) (wecom.SharedToken, error) {
	t, err := s.db.SharedToken(ctx, key, reject, now, func(ctx context.Context) (store.Token, error) {
		t, err := fetch(ctx)
		return store.Token{Value: t.Token, FetchedAt: t.FetchedAt, ExpiresAt: t.ExpiresAt}, err
	})
	return wecom.SharedToken{Token: t.Value, FetchedAt: t.FetchedAt, ExpiresAt: t.ExpiresAt}, err
}

// heartbeatEvery is how often a running instance says it is alive.
const heartbeatEvery = 15 * time.Second

// watchDowntime starts a reconcile sweep when this start finds that no
// instance was alive for longer than PENDINGLINK_RECONCILE_AFTER_DOWNTIME:
// WeCom retries a callback only briefly, so adds made meanwhile are lost
// unless unionid_to_external_userid finds them. Then it keeps this
// instance's heartbeat until ctx ends.
func watchDowntime(ctx context.Context, db *store.DB, cfg config, logger *slog.Logger, now func() time.Time) error {
	host, _ := os.Hostname()
	instance := fmt.Sprintf("%s-%d-%d", host, os.Getpid(), time.Now().UnixNano())
	last, err := db.Heartbeat(ctx, instance)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if down := now().Sub(last); cfg.ReconcileAfterDowntime > 0 && !last.IsZero() && down > cfg.ReconcileAfterDowntime {
		s, started, err := db.StartSweep(ctx, store.SweepDowntime, time.Time{})
		if err != nil {
			return fmt.Errorf("start reconcile sweep: %w", err)
		}
		logger.Warn("no instance ran for a while: callbacks may have been lost, reconciling",
			"down_for", down.Round(time.Second).String(), "sweep", s.ID, "new_sweep", started, "fans", s.Remaining)
	}
	go func() {
		beat := time.NewTicker(heartbeatEvery)
		defer beat.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-beat.C:
				if _, err := db.Heartbeat(ctx, instance); err != nil && ctx.Err() == nil {
					logger.Warn("heartbeat failed", "err", err)
				}
			}
		}
	}()
	return nil
}

// pipelineErrors forwards River's job errors to the pipeline once it exists.
type pipelineErrors struct{ river.ErrorHandler }

// allowSharedCorps adds the corps that share the app to the receive-id
// allow-list. On failure the list keeps what it had: the signature still
// proves authenticity.
func allowSharedCorps(ctx context.Context, client *wecom.Client, policy *handlers.ReceiveIDPolicy) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	corps, err := client.ListAppShareInfo(ctx)
	if err != nil {
		return fmt.Errorf("list_app_share_info: %w", err)
	}
	ids := make([]string, len(corps))
	for i, c := range corps {
		ids[i] = c.CorpID
	}
	policy.Allow(ids...)
	return nil
}

// keepAllowlist loads the corps sharing the app into the allow-list now
// and then daily in the background; while WeCom is unreachable it retries
// with backoff (1 s doubling to 5 min) instead of waiting a day. A
// callback from a corp not on the list, or a share change, refreshes it
// sooner (handlers.Config.RefreshReceiveIDs).
func keepAllowlist(ctx context.Context, refresh func(context.Context) error, logger *slog.Logger) {
	backoff := time.Second
	attempt := func() time.Duration {
		if err := refresh(ctx); err != nil {
			if ctx.Err() == nil {
				logger.Warn("receive-id allow-list not loaded from WeCom: until it is, it holds WECOM_DOWNSTREAM_CORP_IDS and what unknown receive ids fetch",
					"retry_in", backoff.String(), "err", err)
			}
			wait := backoff
			backoff = min(2*backoff, 5*time.Minute)
			return wait
		}
		logger.Info("receive-id allow-list: added the corps sharing the app")
		backoff = time.Second
		return 24 * time.Hour
	}
	wait := attempt()
	go func() {
		for quota.Sleep(ctx, wait) == nil {
			wait = attempt()
		}
	}()
}
