package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/store"
)

// config is everything serve needs. Each field comes from an environment
// variable and can be overridden by the flag of the same name (lowercase,
// hyphens): WECOM_CORP_ID is --wecom-corp-id.
type config struct {
	CorpID          string
	AgentID         int64
	CorpSecret      string
	CallbackToken   string
	CallbackAESKey  string
	APIBase         string
	DownstreamCorps []string
	ReceiveIDCheck  string
	PendingToken    string
	TokenRefresh    time.Duration
	Addr            string
	DB              string
	AdminToken      string
	CallbackPath    string
	CallbackMaxAge  time.Duration
	// QuotaReserve and QuotaFloor are quota.Config's Reserve and Floor.
	QuotaReserve, QuotaFloor int64
	// QuotaSustained paces registrations at the quota's sustained rate
	// (WECOM_PENDING_QUOTA_PACE=sustained) rather than the hour's.
	QuotaSustained bool
	// DBMaxConns sizes the PostgreSQL pool (store.Config.MaxConns).
	DBMaxConns int64
	// InstanceID is store.Config.InstanceID.
	InstanceID string
	// CallbackMaxBytes caps a callback body (handlers.Config.BodyLimit).
	CallbackMaxBytes    int64
	LogLevel            slog.Level
	ShutdownTimeout     time.Duration
	QuotaHour           int64
	QuotaDay            int64
	QuotaMonth          int64
	ExternalHour        int64
	ExternalDay         int64
	WebhookURL          string
	WebhookSecret       string
	Backfill            bool
	ResolveWindow       time.Duration
	ResolveWorkers      int64
	RegisterConcurrency int64
	ResolveMaxWait      time.Duration
	RenewBefore         time.Duration
	RenewInterval       time.Duration
	// RenewEarly and RenewLearnAfter are pipeline.Config's.
	RenewEarly      pipeline.RenewEarly
	RenewLearnAfter int64

	NotCustomerYetDelay    time.Duration
	ReconcileInterval      time.Duration
	ReconcileAfterDowntime time.Duration

	// TrustedProxies is handlers.Config.TrustedProxies.
	TrustedProxies []*net.IPNet
}

// setting describes one configuration variable. TestREADMEConfigTable checks
// that the README's table lists each one with its default.
type setting struct {
	env      string
	def      string
	required bool
	secret   bool
	usage    string
	apply    func(c *config, v string) error
}

func settings() []setting {
	str := func(f func(*config) *string) func(*config, string) error {
		return func(c *config, v string) error { *f(c) = v; return nil }
	}
	return []setting{
		{env: "WECOM_CORP_ID", required: true, usage: "the brand's (upstream) corp id",
			apply: str(func(c *config) *string { return &c.CorpID })},
		{env: "WECOM_AGENT_ID", required: true, usage: "agent id of the shared self-built app in the upstream corp",
			apply: func(c *config, v string) error {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n <= 0 {
					return errors.New("must be a positive integer")
				}
				c.AgentID = n
				return nil
			}},
		{env: "WECOM_CORP_SECRET", required: true, secret: true, usage: "secret of the shared app",
			apply: str(func(c *config) *string { return &c.CorpSecret })},
		{env: "WECOM_CALLBACK_TOKEN", required: true, secret: true, usage: "callback Token set in the app's 接收消息 settings",
			apply: str(func(c *config) *string { return &c.CallbackToken })},
		{env: "WECOM_CALLBACK_AES_KEY", required: true, secret: true, usage: "callback EncodingAESKey (43 characters)",
			apply: str(func(c *config) *string { return &c.CallbackAESKey })},
		{env: "WECOM_API_BASE", def: "https://qyapi.weixin.qq.com", usage: "base URL of the WeCom API",
			apply: func(c *config, v string) error {
				if !strings.HasPrefix(v, "http://") && !strings.HasPrefix(v, "https://") {
					return errors.New("must be an http(s) URL")
				}
				c.APIBase = strings.TrimRight(v, "/")
				return nil
			}},
		{env: "WECOM_DOWNSTREAM_CORP_IDS", usage: "comma-separated dealer corp ids accepted as receive ids in allowlist mode",
			apply: func(c *config, v string) error { c.DownstreamCorps = splitList(v); return nil }},
		{env: "WECOM_RECEIVE_ID_CHECK", def: handlers.ReceiveIDAllowlist, usage: "allowlist (upstream + downstream corp ids), strict (upstream only) or off",
			apply: func(c *config, v string) error {
				switch v {
				case handlers.ReceiveIDAllowlist, handlers.ReceiveIDStrict, handlers.ReceiveIDOff:
					c.ReceiveIDCheck = v
					return nil
				}
				return errors.New("must be allowlist, strict or off")
			}},
		{env: "WECOM_PENDING_TOKEN", def: "upstream", usage: "token for batch/external_userid_to_pending_id: upstream or downstream",
			apply: func(c *config, v string) error {
				if v != "upstream" && v != "downstream" {
					return errors.New("must be upstream or downstream")
				}
				c.PendingToken = v
				return nil
			}},
		{env: "WECOM_TOKEN_REFRESH_INTERVAL", def: "5s", usage: "least time between two fetches of one app's access_token; a younger token WeCom rejects is not refetched",
			apply: positiveDurationSetting(func(c *config) *time.Duration { return &c.TokenRefresh })},
		{env: "PENDINGLINK_ADDR", def: ":8080", usage: "listen address",
			apply: str(func(c *config) *string { return &c.Addr })},
		{env: "PENDINGLINK_TRUSTED_PROXIES", usage: "comma-separated addresses or CIDR ranges of the reverse proxies in front (e.g. 10.0.0.0/8): the client address logged is then taken from their X-Forwarded-For; empty: the connecting address, headers ignored",
			apply: func(c *config, v string) error {
				for _, p := range splitList(v) {
					if !strings.Contains(p, "/") { // one address
						bits := "/128"
						if ip := net.ParseIP(p); ip != nil && ip.To4() != nil {
							bits = "/32"
						}
						p += bits
					}
					_, n, err := net.ParseCIDR(p)
					if err != nil {
						return errors.New("must be comma-separated IP addresses or CIDR ranges such as 10.0.0.0/8")
					}
					c.TrustedProxies = append(c.TrustedProxies, n)
				}
				return nil
			}},
		{env: "PENDINGLINK_DB", def: "./pendinglink.db", usage: "SQLite database file, or a postgres:// DSN (several instances share one PostgreSQL database); its password is never logged",
			apply: str(func(c *config) *string { return &c.DB })},
		{env: "PENDINGLINK_INSTANCE_ID", usage: "this instance's name, the same across its restarts and unique among instances sharing a PostgreSQL database (e.g. the container name): a restart then resumes at once the jobs its killed process left running; empty: River's rescue does, after a couple of minutes",
			apply: str(func(c *config) *string { return &c.InstanceID })},
		{env: "PENDINGLINK_DB_MAX_CONNS", def: strconv.Itoa(store.DefaultMaxConns), usage: "PostgreSQL connections per instance (writes, reads and River's jobs share them; River's LISTEN takes one more)",
			apply: intSetting(func(c *config) *int64 { return &c.DBMaxConns })},
		{env: "PENDINGLINK_ADMIN_TOKEN", required: true, secret: true, usage: "bearer token for /v1",
			apply: func(c *config, v string) error {
				if len(v) < 16 {
					return errors.New("must be at least 16 characters")
				}
				c.AdminToken = v
				return nil
			}},
		{env: "PENDINGLINK_CALLBACK_PATH", def: handlers.DefaultCallbackPath, usage: "path of the callback URL; not one of the server's own (/, /healthz, /readyz, /metrics, /v1/..., /ui/..., /riverui/...)",
			apply: func(c *config, v string) error {
				if err := handlers.CheckCallbackPath(v); err != nil {
					return err
				}
				c.CallbackPath = v
				return nil
			}},
		{env: "PENDINGLINK_CALLBACK_MAX_BYTES", def: strconv.Itoa(handlers.DefaultBodyLimit), usage: "largest callback body accepted (413 above); real events are a few KiB",
			apply: func(c *config, v string) error {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < 1024 || n > handlers.MaxBodyLimit {
					return fmt.Errorf("must be an integer from 1024 to %d", handlers.MaxBodyLimit)
				}
				c.CallbackMaxBytes = n
				return nil
			}},
		{env: "PENDINGLINK_CALLBACK_MAX_AGE", def: "24h", usage: "reject callbacks whose timestamp is older than this (0 disables)",
			apply: durationSetting(func(c *config) *time.Duration { return &c.CallbackMaxAge })},
		{env: "PENDINGLINK_LOG_LEVEL", def: "info", usage: "debug, info, warn or error",
			apply: func(c *config, v string) error {
				if c.LogLevel.UnmarshalText([]byte(v)) != nil {
					return errors.New("must be debug, info, warn or error")
				}
				return nil
			}},
		{env: "PENDINGLINK_SHUTDOWN_TIMEOUT", def: "15s", usage: "how long SIGTERM waits for in-flight requests and jobs",
			apply: positiveDurationSetting(func(c *config) *time.Duration { return &c.ShutdownTimeout })},
		{env: "WECOM_PENDING_QUOTA_HOUR", def: "100000", usage: "unionid_to_pending_id calls allowed per rolling hour",
			apply: intSetting(func(c *config) *int64 { return &c.QuotaHour })},
		{env: "WECOM_PENDING_QUOTA_DAY", def: "480000", usage: "unionid_to_pending_id calls allowed per rolling 24 hours",
			apply: intSetting(func(c *config) *int64 { return &c.QuotaDay })},
		{env: "WECOM_PENDING_QUOTA_MONTH", def: "7500000", usage: "unionid_to_pending_id calls allowed per rolling 31 days",
			apply: intSetting(func(c *config) *int64 { return &c.QuotaMonth })},
		{env: "WECOM_PENDING_QUOTA_RESERVE", def: "0", usage: "percent (0-90) of every unionid_to_pending_id window left to other apps of the corp",
			apply: percentSetting(0, 90, func(c *config) *int64 { return &c.QuotaReserve })},
		{env: "WECOM_PENDING_QUOTA_PACE", def: "hour", usage: "how registrations are paced: hour (the hour's rate; a bulk load finishes soonest) or sustained (the slowest window's rate, 7.5M a month by default: what is registered then comes due for renewal no faster than the quota allows, so a fan base larger than a month's quota stays live)",
			apply: func(c *config, v string) error {
				switch v {
				case "hour":
					c.QuotaSustained = false
				case "sustained":
					c.QuotaSustained = true
				default:
					return errors.New(`must be "hour" or "sustained"`)
				}
				return nil
			}},
		{env: "WECOM_QUOTA_FLOOR", def: "10", usage: "percent (1-100): the lowest share of a window a 45009 (another app spending the quota) may lower our limit to",
			apply: percentSetting(1, 100, func(c *config) *int64 { return &c.QuotaFloor })},
		{env: "WECOM_EXTERNAL_QUOTA_HOUR", def: "20000", usage: "unionid_to_external_userid calls allowed per rolling hour",
			apply: intSetting(func(c *config) *int64 { return &c.ExternalHour })},
		{env: "WECOM_EXTERNAL_QUOTA_DAY", def: "240000", usage: "unionid_to_external_userid calls allowed per rolling 24 hours",
			apply: intSetting(func(c *config) *int64 { return &c.ExternalDay })},
		{env: "PENDINGLINK_WEBHOOK_URL", usage: "POST each new or ended link here (empty: no webhook)",
			apply: func(c *config, v string) error {
				u, err := url.Parse(v)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return errors.New("must be an http(s) URL")
				}
				c.WebhookURL = v
				return nil
			}},
		{env: "PENDINGLINK_WEBHOOK_SECRET", secret: true, usage: "HMAC-SHA256 key of X-Pendinglink-Signature (required with a webhook URL)",
			apply: str(func(c *config) *string { return &c.WebhookSecret })},
		{env: "PENDINGLINK_BACKFILL_EXISTING", def: "true", usage: "ask unionid_to_external_userid once about every registered fan, for customers the dealers already have (interactive registrations at once, the rest as its quota allows)",
			apply: func(c *config, v string) error {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return errors.New("must be true or false")
				}
				c.Backfill = b
				return nil
			}},
		{env: "PENDINGLINK_RESOLVE_WINDOW", def: "50ms", usage: "how long a resolve waits for others to share its batch call",
			apply: positiveDurationSetting(func(c *config) *time.Duration { return &c.ResolveWindow })},
		{env: "PENDINGLINK_RESOLVE_MAX_WAIT", def: "200ms", usage: "how long a resolve may wait in all while more resolve jobs are queued (a burst); at least PENDINGLINK_RESOLVE_WINDOW",
			apply: durationSetting(func(c *config) *time.Duration { return &c.ResolveMaxWait })},
		{env: "PENDINGLINK_RESOLVE_WORKERS", def: "200", usage: "resolve jobs worked at once, 1 to 10000, River's most per queue (bounds the batch size; 100 ids fill a call)",
			apply: rangeSetting(maxQueueWorkers, func(c *config) *int64 { return &c.ResolveWorkers })},
		{env: "PENDINGLINK_REGISTER_CONCURRENCY", def: "32", usage: "unionid_to_pending_id calls the registrar has in flight at once (enough to reach the quota's rate while WeCom answers)",
			apply: intSetting(func(c *config) *int64 { return &c.RegisterConcurrency })},
		{env: "PENDINGLINK_NOT_CUSTOMER_YET_DELAY", def: "45s", usage: "how long a fresh add whose lookup answers 84061 or no pending_id waits for its one retry (the reference advises 30-60 s)",
			apply: positiveDurationSetting(func(c *config) *time.Duration { return &c.NotCustomerYetDelay })},
		{env: "PENDINGLINK_RENEW_BEFORE", def: "168h", usage: "renew fans' pending_ids this long before they expire, while renewals start early (PENDINGLINK_RENEW_EARLY)",
			apply: positiveDurationSetting(func(c *config) *time.Duration { return &c.RenewBefore })},
		{env: "PENDINGLINK_RENEW_EARLY", def: string(pipeline.RenewEarlyAuto), usage: "auto (renew early until renewals show WeCom gives the same id back until it expires, then at expiry), always (PENDINGLINK_RENEW_BEFORE ahead) or never (at expiry)",
			apply: func(c *config, v string) error {
				m, err := pipeline.ParseRenewEarly(v)
				if err != nil {
					return errors.New("must be auto, always or never")
				}
				c.RenewEarly = m
				return nil
			}},
		{env: "PENDINGLINK_RENEW_LEARN_AFTER", def: strconv.Itoa(pipeline.DefaultRenewLearnAfter), usage: "with PENDINGLINK_RENEW_EARLY=auto: renewals answered with the id the fan held, and none with a new id, before renewing at expiry",
			apply: intSetting(func(c *config) *int64 { return &c.RenewLearnAfter })},
		{env: "PENDINGLINK_RENEW_INTERVAL", def: "1h", usage: "how often the renewal job looks for expiring pending_ids; each run queues as many as the quota can serve before the next",
			apply: positiveDurationSetting(func(c *config) *time.Duration { return &c.RenewInterval })},
		{env: "PENDINGLINK_RECONCILE_INTERVAL", def: "1m", usage: "how often the reconcile job checks fans against unionid_to_external_userid",
			apply: positiveDurationSetting(func(c *config) *time.Duration { return &c.ReconcileInterval })},
		{env: "PENDINGLINK_RECONCILE_AFTER_DOWNTIME", def: "1m", usage: "start a reconcile sweep when a start finds no instance ran for this long (0: never)",
			apply: durationSetting(func(c *config) *time.Duration { return &c.ReconcileAfterDowntime })},
	}
}

func durationSetting(f func(*config) *time.Duration) func(*config, string) error {
	return func(c *config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return errors.New("must be a non-negative duration such as 30s or 24h")
		}
		*f(c) = d
		return nil
	}
}

func percentSetting(least, most int64, f func(*config) *int64) func(*config, string) error {
	return func(c *config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < least || n > most {
			return fmt.Errorf("must be a whole percentage from %d to %d", least, most)
		}
		*f(c) = n
		return nil
	}
}

// positiveDurationSetting is durationSetting for a setting 0 would make
// meaningless (the code would otherwise quietly use its default instead).
func positiveDurationSetting(f func(*config) *time.Duration) func(*config, string) error {
	return func(c *config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return errors.New("must be positive, a duration such as 45s or 24h")
		}
		*f(c) = d
		return nil
	}
}

// rangeSetting is intSetting with an upper bound.
func rangeSetting(most int64, f func(*config) *int64) func(*config, string) error {
	return func(c *config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > most {
			return fmt.Errorf("must be an integer from 1 to %d", most)
		}
		*f(c) = n
		return nil
	}
}

func intSetting(f func(*config) *int64) func(*config, string) error {
	return func(c *config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return errors.New("must be a positive integer")
		}
		*f(c) = n
		return nil
	}
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// maxQueueWorkers is the most workers River allows a queue; it checks the
// resolve queue's only once this instance takes its lease, at run time.
const maxQueueWorkers = river.QueueNumWorkersMax

// flagName turns WECOM_CORP_ID into wecom-corp-id.
func flagName(env string) string {
	return strings.ReplaceAll(strings.ToLower(env), "_", "-")
}

// noArgs fails if arguments follow the flags of a command that takes none.
// It does not echo them: one may be a DSN with its password, or a secret.
func noArgs(cmd string, fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: %d unexpected arguments after the flags (not shown, they may hold a secret)", cmd, fs.NArg())
	}
	return nil
}

// loadConfig reads the environment, then the flags, and validates. Errors name
// the variable and never echo its value.
func loadConfig(name string, args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	return loadConfigWith(name, args, getenv, stderr, nil)
}

// loadConfigWith is loadConfig for a command with flags of its own, which
// extra defines on the same flag set.
func loadConfigWith(name string, args []string, getenv func(string) string, stderr io.Writer, extra func(*flag.FlagSet)) (config, error) {
	ss := settings()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if extra != nil {
		extra(fs)
	}
	// A flag's default is the setting's own, not the environment's value:
	// the flag package prints defaults for -h and for any mistyped flag,
	// and the environment holds the secrets. The environment applies
	// after parsing, to every flag not given.
	vals := make([]*string, len(ss))
	for i, s := range ss {
		vals[i] = fs.String(flagName(s.env), s.def, s.usage+" (env "+s.env+")")
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if err := noArgs(name, fs); err != nil {
		return config{}, err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for i, s := range ss {
		if v := getenv(s.env); v != "" && !given[flagName(s.env)] {
			*vals[i] = v
		}
	}
	c, err := applySettings(ss, vals)
	if err != nil {
		return config{}, err
	}
	if c.WebhookURL != "" && c.WebhookSecret == "" {
		return config{}, errors.New("PENDINGLINK_WEBHOOK_SECRET: required when PENDINGLINK_WEBHOOK_URL is set")
	}
	if c.ResolveMaxWait < c.ResolveWindow {
		// The coalescer would quietly wait 4 × the window instead.
		return config{}, errors.New("PENDINGLINK_RESOLVE_MAX_WAIT: must be at least PENDINGLINK_RESOLVE_WINDOW")
	}
	return c, nil
}

func applySettings(ss []setting, vals []*string) (config, error) {
	var c config
	for i, s := range ss {
		v := strings.TrimSpace(*vals[i])
		if v == "" {
			if s.required {
				return config{}, fmt.Errorf("%s: required, set it in the environment or with --%s", s.env, flagName(s.env))
			}
			continue
		}
		if err := s.apply(&c, v); err != nil {
			return config{}, fmt.Errorf("%s: %w", s.env, err)
		}
	}
	return c, nil
}

// LogValue keeps secrets out of logs: the config logs with secrets masked.
func (c config) LogValue() slog.Value {
	mask := func(s string) string {
		if s == "" {
			return ""
		}
		return "***"
	}
	return slog.GroupValue(
		slog.String("corp_id", c.CorpID), slog.Int64("agent_id", c.AgentID),
		slog.String("corp_secret", mask(c.CorpSecret)), slog.String("callback_token", mask(c.CallbackToken)),
		slog.String("callback_aes_key", mask(c.CallbackAESKey)), slog.String("api_base", c.APIBase),
		slog.Any("downstream_corp_ids", c.DownstreamCorps), slog.String("receive_id_check", c.ReceiveIDCheck),
		slog.String("pending_token", c.PendingToken), slog.String("addr", c.Addr), slog.String("db", store.RedactDSN(c.DB)),
		slog.String("admin_token", mask(c.AdminToken)), slog.String("callback_path", c.CallbackPath),
		slog.Duration("callback_max_age", c.CallbackMaxAge), slog.String("log_level", c.LogLevel.String()),
	)
}
