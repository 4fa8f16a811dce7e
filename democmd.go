package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/pendinglink/pendinglink/demo"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// demoCommand runs "pendinglink demo": it parses the flags and runs
// demo.Run (or, with --scenario disorder, demo.RunDisorder) with a server
// started like "pendinglink serve".
func demoCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o demo.Options
	fs.IntVar(&o.Fans, "fans", 2000, "fans the brand registers")
	fs.IntVar(&o.Customers, "customers", 3000, "customers the dealers add")
	fs.IntVar(&o.Dealers, "dealers", 3, "dealer corps")
	fs.Float64Var(&o.FanShare, "fan-share", 0.5, "fraction of customers who are registered fans")
	fs.IntVar(&o.Chats, "chats", 5, "group chats whose members join by callback")
	fs.IntVar(&o.ChatSize, "chat-size", 20, "members per group chat")
	fs.IntVar(&o.Removals, "removals", 100, "customers removed again")
	fs.Float64Var(&o.DupShare, "duplicates", 0.05, "fraction of callbacks WeCom delivers twice")
	fs.BoolVar(&o.Keep, "keep", false, "keep serving after the report until interrupted")
	fs.Uint64Var(&o.Seed, "seed", 1, "random seed of the demo world")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "give up when processing takes longer")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the demo to this file")
	fs.IntVar(&o.Rate, "rate", 0, "callbacks per second (0: as fast as 32 connections go)")
	fs.DurationVar(&o.WeComLatency, "wecom-latency", 0, "latency the fake WeCom adds to every API call")
	fs.BoolVar(&o.RegisterFirst, "register-first", false, "register every fan before the first callback")
	fs.IntVar(&o.QuotaHour, "quota-hour", 3_600_000, "unionid_to_pending_id quota per hour, of pendinglink and of the fake (WeCom's is 100000)")
	scenario := fs.String("scenario", "default", "default, or disorder: out-of-order callbacks, an outage, transfers, chats, both pending_id models")
	pendingModel := fs.String("pending-model", "", "disorder: when-registered or registered-first (default: both, one after the other)")
	staff := fs.Int("staff", 3, "disorder: staff members per dealer")
	window := fs.Int("window", 8, "disorder: callbacks shuffled together")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *scenario != "default" && *scenario != "disorder" {
		return errors.New("demo: --scenario: must be default or disorder")
	}
	if o.Fans < 0 || o.Customers < 0 || o.Dealers < 1 || o.FanShare < 0 || o.FanShare > 1 || o.ChatSize > 100 ||
		o.Rate < 0 || o.QuotaHour < 1 {
		return errors.New("demo: flags out of range")
	}
	stop, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stop()
	// The pipeline's tuning knobs pass through, to try them on the demo.
	o.Env = map[string]string{}
	for _, k := range []string{"PENDINGLINK_RESOLVE_WINDOW", "PENDINGLINK_RESOLVE_MAX_WAIT", "PENDINGLINK_RESOLVE_WORKERS", "PENDINGLINK_LOG_LEVEL"} {
		if v := getenv(k); v != "" {
			o.Env[k] = v
		}
	}
	startServer := func(ctx context.Context, env map[string]string, hc *http.Client, now func() time.Time) (string, func() error, error) {
		cfg, err := loadConfig("demo", nil, mapEnv(env), stderr)
		if err != nil {
			return "", nil, err
		}
		logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
		a, err := startApp(ctx, cfg, logger, appOptions{HTTPClient: hc, Now: now})
		if err != nil {
			return "", nil, err
		}
		return "http://" + a.addr.String(), a.close, nil
	}
	o.StartServer = func(ctx context.Context, env map[string]string, hc *http.Client) (string, func() error, error) {
		return startServer(ctx, env, hc, nil)
	}
	if *scenario == "disorder" {
		return runDisorderDemo(ctx, fs, o, *pendingModel, *staff, *window, startServer, stdout)
	}
	return demo.Run(ctx, o, stdout)
}

// runDisorderDemo runs demo.RunDisorder with the shared flags; --dealers
// defaults to 4 there.
func runDisorderDemo(ctx context.Context, fs *flag.FlagSet, o demo.Options, model string, staff, window int,
	startServer func(context.Context, map[string]string, *http.Client, func() time.Time) (string, func() error, error), stdout io.Writer) error {
	d := demo.DisorderOptions{
		Fans: o.Fans, Dealers: 4, Staff: staff, Seed: o.Seed, Timeout: o.Timeout, Window: window,
		DupShare: o.DupShare, Env: o.Env, StartServer: startServer,
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "dealers" {
			d.Dealers = o.Dealers
		}
	})
	switch model {
	case "":
		d.Models = []wecomtest.PendingModel{wecomtest.PendingWhenRegistered, wecomtest.PendingRegisteredFirst}
	case "when-registered":
		d.Models = []wecomtest.PendingModel{wecomtest.PendingWhenRegistered}
	case "registered-first":
		d.Models = []wecomtest.PendingModel{wecomtest.PendingRegisteredFirst}
	default:
		return errors.New("demo: --pending-model: must be when-registered or registered-first")
	}
	return demo.RunDisorder(ctx, d, stdout)
}
