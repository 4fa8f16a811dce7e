package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pendinglink/pendinglink/crypto"
	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/store"
)

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig("serve", args, getenv, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	a, err := startApp(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return a.wait(ctx)
}

// app is one running pendinglink: store, workers, HTTP server. serve and the
// demo build it the same way.
type app struct {
	cfg      config
	logger   *slog.Logger
	db       *store.DB
	httpSrv  *http.Server
	addr     net.Addr
	serveErr chan error
}

// startApp wires store → handlers → listener and starts serving. On error
// everything already opened is closed again.
func startApp(ctx context.Context, cfg config, logger *slog.Logger) (_ *app, err error) {
	logger.Info("starting pendinglink", "version", buildVersion(), "config", cfg)
	cr, err := crypto.New(cfg.CallbackToken, cfg.CallbackAESKey)
	if err != nil {
		// crypto errors never carry the key; name the variables to fix.
		return nil, fmt.Errorf("WECOM_CALLBACK_TOKEN / WECOM_CALLBACK_AES_KEY: %w (the key must be the 43-character EncodingAESKey from the WeCom console)", err)
	}
	policy, err := handlers.NewReceiveIDPolicy(cfg.ReceiveIDCheck, cfg.CorpID, cfg.DownstreamCorps)
	if err != nil {
		return nil, fmt.Errorf("WECOM_RECEIVE_ID_CHECK: %w", err)
	}

	db, err := store.Open(ctx, store.Config{DSN: cfg.DB, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("PENDINGLINK_DB: open database: %w", err)
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()

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
		MaxAge:       cfg.CallbackMaxAge,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("PENDINGLINK_ADDR: %w", err)
	}
	if err := db.Start(ctx); err != nil {
		ln.Close()
		return nil, fmt.Errorf("start job workers: %w", err)
	}
	a := &app{
		cfg: cfg, logger: logger, db: db, addr: ln.Addr(), serveErr: make(chan error, 1),
		httpSrv: &http.Server{
			Handler:           srv,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	if err := a.httpSrv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	if err := a.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close database: %w", err))
	}
	a.logger.Info("stopped")
	return errors.Join(errs...)
}
