// Package handlers holds everything in pendinglink that reacts to input: the
// WeCom callback URL, the /v1 admin API, health and metrics endpoints.
package handlers

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/crypto"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
)

// Store is what the handlers need from persistence. *store.DB implements it.
type Store interface {
	// SaveEvent stores an authentic event and enqueues its jobs in one
	// transaction; a duplicate returns inserted == false and no error.
	SaveEvent(ctx context.Context, ev *store.Event) (inserted bool, err error)
	// Status returns the counters behind /v1/status.
	Status(ctx context.Context) (store.Status, error)
	// Ping reports whether the database is reachable.
	Ping(ctx context.Context) error
}

// Pipeline is what the /v1 fan routes and /v1/status need from the
// pipeline. *pipeline.Pipeline implements it.
type Pipeline interface {
	// Register registers one fan, at once when the quota allows. Errors:
	// store.ErrInvalid, pipeline.ErrRefused.
	Register(ctx context.Context, fan store.FanInput) (pipeline.Registration, error)
	// RegisterBatch queues fans as bulk work.
	RegisterBatch(ctx context.Context, fans []store.FanInput) (store.RegisterResult, error)
	// Status returns the pipeline's counters.
	Status(ctx context.Context) (store.PipelineStatus, error)
	// Reconcile starts a sweep of the fans registered before the given
	// time (zero: now), or returns the one running (started == false).
	Reconcile(ctx context.Context, registeredBefore time.Time) (s *store.Sweep, started bool, err error)
	// LatestSweep returns the newest sweep, nil if none.
	LatestSweep(ctx context.Context) (*store.Sweep, error)
	// RetryEvents re-drives failed or unmatched events; RetryFans re-queues
	// failed fans. Both return how many matched. Errors: store.ErrInvalid.
	RetryEvents(ctx context.Context, f store.RetryFilter) (int64, error)
	RetryFans(ctx context.Context, f store.RetryFilter) (int64, error)
	// Forecast reports the quota windows and the backlog waiting for them.
	Forecast(ctx context.Context) (pipeline.Forecast, error)
	// UpdateFan changes a fan's priority or last-active time. Errors:
	// store.ErrInvalid, store.ErrNotFound.
	UpdateFan(ctx context.Context, unionID string, u store.FanUpdate) error
}

// Queries are the reads behind the /v1 lookups. *store.DB implements it.
type Queries interface {
	// FindFan returns a fan with its pending_ids and links, or store.ErrNotFound.
	FindFan(ctx context.Context, unionID string) (*store.FanDetail, error)
	// FindLinks lists links newest first.
	FindLinks(ctx context.Context, f store.LinkFilter) ([]store.Link, error)
	// FindCustomer returns a customer's resolutions and links, or store.ErrNotFound.
	FindCustomer(ctx context.Context, corpID, externalUserID string) (*store.CustomerDetail, error)
	// FanStory and CustomerStory tell what happened to a fan or a
	// customer (store.ErrNotFound, store.ErrInvalid).
	FanStory(ctx context.Context, unionID string) (*store.Story, error)
	CustomerStory(ctx context.Context, corpID, externalUserID string) (*store.Story, error)
	// Activity buckets recent events and links (store.ErrInvalid).
	Activity(ctx context.Context, window time.Duration) (store.Activity, error)
	// OutboxHealth reports the webhook's backlog.
	OutboxHealth(ctx context.Context) (store.OutboxHealth, error)
}

// DefaultCallbackPath is where WeCom posts callbacks unless configured otherwise.
const DefaultCallbackPath = "/wecom/callback"

// Callback limits, which bound the memory unauthenticated callers can make
// the server hold to about DefaultBodyLimit × DefaultCallbackConcurrency.
const (
	// DefaultBodyLimit caps a callback body. Real events are a few KiB; the
	// largest, an add_member listing 500 members with 32-character ids, is
	// about 25 KiB of XML and under 40 KiB once encrypted, base64-encoded
	// and enveloped. The cap leaves room for six times that.
	DefaultBodyLimit = 256 << 10
	// MaxBodyLimit is the largest Config.BodyLimit: the base64 of a
	// plaintext of store.MaxRawLen, so that every authentic event read can
	// also be stored.
	MaxBodyLimit = store.MaxRawLen / 3 * 4
	// DefaultCallbackConcurrency bounds the callbacks read and
	// authenticated at once. WeCom waits for each answer and retries a 503,
	// so a busy server refuses at once rather than queueing without bound.
	DefaultCallbackConcurrency = 64
)

// Config lists the handlers' dependencies. Fields without a default are required.
type Config struct {
	// Store persists events. Required: pass the *store.DB from store.Open.
	Store Store
	// Crypt verifies and decrypts callbacks. Required: crypto.New(token, aesKey).
	Crypt *crypto.Crypt
	// ReceiveIDs decides which receive ids are accepted. Required: NewReceiveIDPolicy.
	ReceiveIDs *ReceiveIDPolicy
	// AdminToken guards /v1. Required; compared in constant time.
	AdminToken string
	// Logger gets one line per rejection at warn. Defaults to a discard logger.
	Logger *slog.Logger
	// Registerer and Gatherer hold the metrics. Default to a fresh registry,
	// so tests never share counters.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// CallbackPath is the callback route. Defaults to DefaultCallbackPath.
	CallbackPath string
	// MaxAge rejects callbacks whose timestamp is further than this from now
	// (replay window). Zero disables the check.
	MaxAge time.Duration
	// BodyLimit caps the POST body. Defaults to DefaultBodyLimit; at most
	// MaxBodyLimit.
	BodyLimit int64
	// CallbackConcurrency bounds the callbacks read and authenticated at
	// once; one more is answered 503 with Retry-After. Defaults to
	// DefaultCallbackConcurrency.
	CallbackConcurrency int
	// Now is the clock for the replay window. Defaults to time.Now.
	Now func() time.Time
	// Pipeline, when set, mounts the fan, link and customer routes and adds
	// the pipeline's counters to /v1/status.
	Pipeline Pipeline
	// Queries answers the /v1 lookups mounted with Pipeline. Defaults to
	// Store when it implements Queries (as *store.DB does).
	Queries Queries
	// RefreshReceiveIDs reloads ReceiveIDs' allow-list from WeCom (the corps
	// sharing the app). With it, a callback with an unknown receive id
	// triggers a refresh (at most once per RefreshInterval) before it is
	// refused, and a share-change event triggers one. Optional.
	RefreshReceiveIDs func(ctx context.Context) error
	// RefreshInterval defaults to DefaultRefreshInterval.
	RefreshInterval time.Duration
	// WeCom reports API calls and errors for /v1/status. Optional.
	WeCom interface{ Stats() wecom.Stats }
	// Quota is the unionid_to_pending_id limiter, whose windows /v1/status
	// shows. Optional.
	Quota QuotaUsage
	// Gauges, when set, adds the database-wide gauges to /metrics (events,
	// fans, links, River jobs, quota forecast, webhook outbox). Optional:
	// pass the *pipeline.Pipeline.
	Gauges GaugeSource
	// GaugesMaxAge is how long those figures are reused between scrapes.
	// Defaults to DefaultGaugesMaxAge.
	GaugesMaxAge time.Duration
	// JobsUI, when set, is served under JobsUIPrefix behind the admin
	// token: River's web UI (riverui), built by main so that handlers
	// imports no River package. Optional.
	JobsUI http.Handler
	// Webhook says a webhook URL is set, so /v1/status reports its
	// delivery under "webhook" as something to watch.
	Webhook bool
	// TrustedProxies are the reverse proxies in front of the server. The
	// client address logged for rejected callbacks and refused sign-ins is
	// the one that connected, unless it is one of these: then it is the
	// nearest address in X-Forwarded-For that is not. Empty: headers are
	// ignored, as any caller can write them.
	TrustedProxies []*net.IPNet
}

// QuotaUsage reports a quota's windows; *quota.Limiter implements it.
type QuotaUsage interface {
	Usage() []quota.Usage
}

// Server is the HTTP surface of pendinglink. It is an http.Handler.
type Server struct {
	*echo.Echo
	cfg      Config
	metrics  *metrics
	sessions sessions
	// statusCounts and forecasts answer ?cached=1 (snapshot.go).
	statusCounts *snapshot[dbStatus]
	forecasts    *snapshot[pipeline.Forecast]
}

// New validates cfg and builds the echo server with every route mounted.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("handlers: Config.Store is required: pass the *store.DB from store.Open")
	case cfg.Crypt == nil:
		return nil, errors.New("handlers: Config.Crypt is required: build it with crypto.New(token, aesKey)")
	case cfg.ReceiveIDs == nil:
		return nil, errors.New("handlers: Config.ReceiveIDs is required: build it with handlers.NewReceiveIDPolicy")
	case cfg.AdminToken == "":
		return nil, errors.New("handlers: Config.AdminToken is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil || cfg.Gatherer == nil {
		reg := prometheus.NewRegistry()
		cfg.Registerer, cfg.Gatherer = reg, reg
	}
	if cfg.CallbackPath == "" {
		cfg.CallbackPath = DefaultCallbackPath
	}
	if err := CheckCallbackPath(cfg.CallbackPath); err != nil {
		return nil, fmt.Errorf("handlers: Config.CallbackPath %q: %w", cfg.CallbackPath, err)
	}
	if cfg.BodyLimit <= 0 {
		cfg.BodyLimit = DefaultBodyLimit
	}
	if cfg.BodyLimit > MaxBodyLimit {
		return nil, fmt.Errorf("handlers: Config.BodyLimit %d is above %d, whose plaintext the store could not keep", cfg.BodyLimit, MaxBodyLimit)
	}
	if cfg.CallbackConcurrency <= 0 {
		cfg.CallbackConcurrency = DefaultCallbackConcurrency
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Pipeline != nil && cfg.Queries == nil {
		q, ok := cfg.Store.(Queries)
		if !ok {
			return nil, errors.New("handlers: Config.Queries is required with Config.Pipeline when Config.Store cannot answer lookups")
		}
		cfg.Queries = q
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	if cfg.GaugesMaxAge <= 0 {
		cfg.GaugesMaxAge = DefaultGaugesMaxAge
	}
	if err := registerCollectors(cfg); err != nil {
		return nil, err
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = ipExtractor(cfg.TrustedProxies)
	s := &Server{Echo: e, cfg: cfg, metrics: m, sessions: newSessions(cfg.AdminToken, cfg.Now)}
	s.statusCounts = newSnapshot("status", cfg.Now, cfg.Logger, s.readStatus)
	e.HTTPErrorHandler = s.handleError

	cb := &callbackHandler{cfg: cfg, metrics: m, slots: make(chan struct{}, cfg.CallbackConcurrency)}
	if cfg.RefreshReceiveIDs != nil {
		if cfg.RefreshInterval <= 0 {
			cfg.RefreshInterval = DefaultRefreshInterval
		}
		cb.receiveIDs = &refresher{refresh: cfg.RefreshReceiveIDs, interval: cfg.RefreshInterval, now: cfg.Now, logger: cfg.Logger}
	}
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })
	e.GET("/readyz", s.ready)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})))

	e.GET(OpenAPIPath, openAPI()) // no token: see OpenAPIPath
	if cfg.JobsUI != nil {
		s.mountJobsUI(e, cfg.JobsUI)
	}

	v1 := e.Group("/v1", s.requireAdmin, textParams)
	v1.GET("/status", s.status)
	if cfg.Pipeline != nil {
		s.forecasts = newSnapshot("quota forecast", cfg.Now, cfg.Logger, cfg.Pipeline.Forecast)
		a := &api{pipeline: cfg.Pipeline, queries: cfg.Queries, logger: cfg.Logger, forecasts: s.forecasts,
			now: cfg.Now, activities: map[time.Duration]*snapshot[store.Activity]{}}
		a.mount(v1)
	}
	if err := s.mountUI(); err != nil {
		return nil, fmt.Errorf("handlers: status page: %w", err)
	}
	// Mounted last, once it is known to shadow none of the routes above
	// (CheckCallbackPath knows the paths; this catches a route added
	// without telling it): echo would let the later of two equal routes
	// win, and WeCom's URL check would get the login page or "ok".
	for _, r := range e.Routes() {
		if r.Path == cfg.CallbackPath {
			return nil, fmt.Errorf("handlers: Config.CallbackPath %q is a route of the server (%s); choose another path", cfg.CallbackPath, r.Method)
		}
	}
	e.GET(cfg.CallbackPath, cb.verifyURL)
	e.POST(cfg.CallbackPath, cb.receive)
	return s, nil
}

// ipExtractor is how c.RealIP() finds the client: the peer's address, or
// behind trusted proxies the nearest X-Forwarded-For entry none of them
// wrote. echo's default would believe any caller's X-Forwarded-For and
// X-Real-IP, and its XFF extractor would trust every private address.
func ipExtractor(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range trusted {
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// handleError is the one place errors become HTTP statuses. Client errors
// keep their message; anything else is logged and answered "internal error"
// so causes (which may name files or hosts) stay out of responses.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, "internal error"
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code = he.Code
		if code < http.StatusInternalServerError {
			msg = fmt.Sprint(he.Message)
		}
	}
	if code >= http.StatusInternalServerError {
		s.cfg.Logger.Error("request failed", "method", c.Request().Method, "path", c.Path(), "status", code, "err", err)
	}
	if c.Request().Method == http.MethodHead {
		err = c.NoContent(code)
	} else {
		err = c.JSON(code, apiclient.ErrorResponse{Error: msg})
	}
	if err != nil {
		s.cfg.Logger.Error("write error response", "err", err)
	}
}

// requireAdmin checks the bearer token in constant time, or the status
// page's session cookie; a request the cookie authenticates that changes
// something must also carry csrfHeader and come from this origin.
func (s *Server) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	want := []byte(s.cfg.AdminToken)
	return func(c echo.Context) error {
		r := c.Request()
		got, ok := strings.CutPrefix(r.Header.Get(echo.HeaderAuthorization), "Bearer ")
		if !ok && s.sessions.fromRequest(r) {
			if !safeMethod(r.Method) && (r.Header.Get(csrfHeader) == "" || !sameOrigin(r)) {
				return echo.NewHTTPError(http.StatusForbidden, "cross-site request refused: send "+csrfHeader+" from the status page")
			}
			return next(c)
		}
		if !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="pendinglink"`)
			return echo.NewHTTPError(http.StatusUnauthorized, "missing or invalid bearer token")
		}
		return next(c)
	}
}

func (s *Server) ready(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Store.Ping(ctx); err != nil {
		s.cfg.Logger.Warn("readiness check failed", "err", err)
		// The one error shape, written here rather than by handleError,
		// which would log a probe's expected 503 as a failed request.
		return c.JSON(http.StatusServiceUnavailable, apiclient.ErrorResponse{Error: "database unreachable"})
	}
	return c.String(http.StatusOK, "ok")
}
