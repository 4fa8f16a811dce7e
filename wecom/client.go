package wecom

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/patrickmn/go-cache"
	"golang.org/x/sync/singleflight"

	"github.com/pendinglink/pendinglink/quota"
)

// API names: the path under /cgi-bin/. They name the API in errors, logs
// and Stats.
const (
	APIGetToken                  = "gettoken"
	APICorpGetToken              = "corpgroup/corp/gettoken"
	APIListAppShareInfo          = "corpgroup/corp/list_app_share_info"
	APIUnionIDToPendingID        = "corpgroup/unionid_to_pending_id"
	APIExternalUserIDToPendingID = "corpgroup/batch/external_userid_to_pending_id"
	APIUnionIDToExternalUserID   = "corpgroup/unionid_to_external_userid"
	APIGroupChatGet              = "externalcontact/groupchat/get"
)

// Values of Config.PendingToken.
const (
	PendingTokenUpstream   = "upstream"
	PendingTokenDownstream = "downstream"
)

const (
	defaultBaseURL      = "https://qyapi.weixin.qq.com"
	defaultQuotaMaxWait = 5 * time.Second
	maxResponseBytes    = 4 << 20
	// tokenFetchTimeout bounds a shared token fetch, which runs detached from
	// the caller that started it so one caller's cancellation cannot fail
	// the others waiting on the same fetch.
	tokenFetchTimeout = time.Minute
	// defaultTokenRefreshInterval spaces token fetches per app; see
	// Config.TokenRefreshInterval.
	defaultTokenRefreshInterval = 5 * time.Second
)

// RetryPolicy bounds the client's retries of retryable errors (IsRetryable).
// Delays grow exponentially with full jitter and are cut short by ctx.
type RetryPolicy struct {
	// MaxAttempts counts the first try. Defaults to 4: WeCom advises at most
	// three retries on -1.
	MaxAttempts int
	// BaseDelay caps the first retry's delay. Defaults to 200ms.
	BaseDelay time.Duration
	// MaxDelay caps every delay. Defaults to 5s.
	MaxDelay time.Duration
}

// Config configures a Client.
type Config struct {
	// BaseURL is WeCom's API origin. Defaults to "https://qyapi.weixin.qq.com".
	BaseURL string
	// CorpID is the upstream (brand) corp id. Required.
	CorpID string
	// AgentID is the shared app's id in the upstream corp. Required for
	// ListAppShareInfo, and so for looking up downstream agentids.
	AgentID int64
	// CorpSecret is the shared app's secret. Required. It is never logged
	// and never appears in errors.
	CorpSecret string
	// HTTPClient sends requests. Defaults to a client with a 5s connect
	// timeout, a 15s overall timeout, keep-alive and no redirects.
	HTTPClient *http.Client
	// Logger receives one line per failed call (API name, errcode, attempt),
	// never a token or the secret. Defaults to discarding.
	Logger *slog.Logger
	// TokenRefreshInterval is the least time between two fetches of one
	// app's token. A token younger than this that WeCom rejects (40014,
	// 42001) is not refetched: WeCom blocks frequent gettoken and answers
	// the same token while it is valid, so the call returns its retryable
	// error instead. Defaults to 5s.
	TokenRefreshInterval time.Duration
	// Now is the clock for token expiry. Defaults to time.Now.
	Now func() time.Time
	// Retry bounds retries of retryable errors. Zero fields take defaults.
	Retry RetryPolicy
	// TokenStore, if set, shares access tokens with the other processes
	// of the deployment: one fetches, the others use its token. Nil: each
	// process fetches its own.
	TokenStore TokenStore
	// PendingToken selects the token batch/external_userid_to_pending_id
	// uses: "upstream" (the default, §9 #3) or "downstream", a token from
	// corpgroup/corp/gettoken for the corp passed to ExternalUserIDToPendingID.
	PendingToken string
	// DownstreamAgents maps a downstream corp id to the app's agentid inside
	// that corp. Corps not listed are looked up with list_app_share_info.
	DownstreamAgents map[string]int64
	// PendingIDQuota, if set, is reserved before each unionid_to_pending_id
	// request (retries included).
	PendingIDQuota *quota.Limiter
	// ExternalUserIDQuota, if set, is reserved before each
	// unionid_to_external_userid request (retries included).
	ExternalUserIDQuota *quota.Limiter
	// QuotaMaxWait is how long a call waits for a limiter (Smooth pacing or
	// a window about to free up) before returning its *quota.Error instead.
	// Defaults to 5s.
	QuotaMaxWait time.Duration
	// Sleep waits between retries. Defaults to a timer that honours ctx;
	// tests inject one.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Client calls WeCom's corpgroup (上下游) APIs for one upstream corp and its
// shared app. It caches access tokens, retries transient errors and keeps
// call counters. A Client is safe for concurrent use.
type Client struct {
	cfg     Config
	base    string // BaseURL + "/cgi-bin/"
	http    *http.Client
	log     *slog.Logger
	now     func() time.Time
	sleep   func(ctx context.Context, d time.Duration) error
	retry   RetryPolicy
	maxWait time.Duration

	// Tokens live in go-cache keyed by tokenKey.String(). Expiry is judged
	// with Config.Now rather than go-cache's wall clock, so tests can drive
	// it. We do not use silenceper/wechat's token code: it keys the cache by
	// corp only (two apps overwrite each other's token), never invalidates a
	// rejected token, uses a client without timeout and takes no ctx.
	tokens *cache.Cache
	tokMu  sync.Mutex // makes invalidate's compare-and-delete atomic with stores
	// rejected holds, per token key, the last token WeCom refused, so that
	// a TokenStore shared with other processes does not return it again.
	rejected map[string]string
	flight   singleflight.Group

	agentMu sync.Mutex
	agents  map[string]int64 // downstream corp -> agentid, configured or looked up
	lookups map[string]bool  // corps whose agentid came from list_app_share_info

	bg       context.Context // parent of detached token fetches; ended by Close
	bgCancel context.CancelFunc

	statsMu sync.Mutex
	stats   Stats

	// blocked holds the APIs a configuration fault blocked (blocked.go).
	blocked gate
}

// NewClient validates cfg and returns a Client. An error names the missing
// or invalid field, never its value.
func NewClient(cfg Config) (*Client, error) {
	if cfg.CorpID == "" {
		return nil, errors.New("wecom: Config.CorpID is required (the upstream corp id)")
	}
	if cfg.CorpSecret == "" {
		return nil, errors.New("wecom: Config.CorpSecret is required (the shared app's secret)")
	}
	switch cfg.PendingToken {
	case "":
		cfg.PendingToken = PendingTokenUpstream
	case PendingTokenUpstream, PendingTokenDownstream:
	default:
		return nil, errors.New(`wecom: Config.PendingToken must be "upstream" or "downstream"`)
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = defaultBaseURL
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("wecom: Config.BaseURL must be an absolute http(s) URL")
	}
	c := &Client{
		cfg:     cfg,
		base:    strings.TrimRight(cfg.BaseURL, "/") + "/cgi-bin/",
		http:    cfg.HTTPClient,
		log:     cfg.Logger,
		now:     cfg.Now,
		sleep:   cfg.Sleep,
		retry:   cfg.Retry,
		maxWait: cfg.QuotaMaxWait,
		tokens:  cache.New(cache.NoExpiration, 0),
		agents:  make(map[string]int64, len(cfg.DownstreamAgents)),
		lookups: make(map[string]bool),
		stats:   Stats{Calls: map[string]int64{}, Errors: map[int]int64{}},
	}
	if c.http == nil {
		c.http = defaultHTTPClient()
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.sleep == nil {
		c.sleep = quota.Sleep
	}
	if c.retry.MaxAttempts <= 0 {
		c.retry.MaxAttempts = 4
	}
	if c.retry.BaseDelay <= 0 {
		c.retry.BaseDelay = 200 * time.Millisecond
	}
	if c.retry.MaxDelay <= 0 {
		c.retry.MaxDelay = 5 * time.Second
	}
	if c.maxWait <= 0 {
		c.maxWait = defaultQuotaMaxWait
	}
	if c.cfg.TokenRefreshInterval <= 0 {
		c.cfg.TokenRefreshInterval = defaultTokenRefreshInterval
	}
	for corp, agent := range cfg.DownstreamAgents {
		c.agents[corp] = agent
	}
	c.bg, c.bgCancel = context.WithCancel(context.Background())
	return c, nil
}

func defaultHTTPClient() *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   32, // the default 2 would redial under a worker pool
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   15 * time.Second,
		// WeCom never redirects; following one would resend the body (and
		// the token) to wherever a proxy points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Close stops shared token fetches in flight and releases idle connections.
func (c *Client) Close() {
	c.bgCancel()
	c.http.CloseIdleConnections()
}

// Stats are the client's counters since NewClient, for /v1/status.
type Stats struct {
	// Calls counts HTTP requests per API name (retries included).
	Calls map[string]int64
	// Errors counts responses with a non-zero errcode, per errcode.
	Errors map[int]int64
	// TransportErrors counts requests that got no usable answer: network
	// errors, timeouts and non-200 HTTP statuses.
	TransportErrors int64
	// QuotaRejected counts calls a local Limiter refused (no request made).
	QuotaRejected int64
	// Blocked lists the APIs blocked by a configuration fault right now.
	Blocked []Blocked
}

// Stats returns a copy of the counters.
func (c *Client) Stats() Stats {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	s := c.stats
	s.Blocked = c.blocked.list()
	s.Calls = make(map[string]int64, len(c.stats.Calls))
	for k, v := range c.stats.Calls {
		s.Calls[k] = v
	}
	s.Errors = make(map[int]int64, len(c.stats.Errors))
	for k, v := range c.stats.Errors {
		s.Errors[k] = v
	}
	return s
}

func (c *Client) count(f func(s *Stats)) {
	c.statsMu.Lock()
	f(&c.stats)
	c.statsMu.Unlock()
}

// respCommon is embedded in every response type; every WeCom answer carries it.
type respCommon struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

func (r *respCommon) common() *respCommon { return r }

// commonResponse is implemented by pointers to response types, through the
// embedded respCommon.
type commonResponse interface{ common() *respCommon }

// responsePtr constrains do's PT to *T for a response type T.
type responsePtr[T any] interface {
	*T
	commonResponse
}

// call describes one API request.
type call struct {
	api    string         // path under /cgi-bin/
	method string         // http.MethodGet or http.MethodPost
	query  url.Values     // extra query parameters (gettoken only)
	token  *tokenKey      // which access_token to send; nil: none
	corp   string         // the dealer a configuration fault of this call concerns; "": the whole API
	quota  *quota.Limiter // reserved before every request; nil: none
	body   any            // JSON request body for POST
}

// do sends cl, retrying retryable errors with backoff and a rejected token
// once with a fresh one, and decodes the successful answer into a new T.
// It is the only place that builds *APIError and counts calls.
func do[T any, PT responsePtr[T]](ctx context.Context, c *Client, cl call) (*T, error) {
	var body []byte
	if cl.body != nil {
		var err error
		if body, err = json.Marshal(cl.body); err != nil {
			return nil, fmt.Errorf("wecom: %s: encode request: %w", cl.api, err)
		}
	}
	probe, err := c.blocked.enter(cl.api, cl.corp, c.now())
	if err != nil {
		return nil, err
	}
	resp, err := doCall[T, PT](ctx, c, cl, body)
	var ae *APIError
	if cl.quota != nil && errors.As(err, &ae) && ae.API == cl.api && ae.Code == CodeAPIFreqOutOfLimit {
		// Our limiter allowed the call, WeCom did not: another app spends
		// the same quota. The limiter learns it instead of trying again.
		cl.quota.Refused()
		c.log.LogAttrs(ctx, slog.LevelWarn, "wecom: quota spent by others detected", slog.String("api", cl.api))
	}
	return resp, c.blocked.leave(cl.api, cl.corp, probe, err, c.now())
}

// doCall is do without the configuration-fault gate.
func doCall[T any, PT responsePtr[T]](ctx context.Context, c *Client, cl call, body []byte) (*T, error) {
	refreshed := false
	var lastErr error
	for attempt := 1; ; {
		if err := ctx.Err(); err != nil {
			return nil, stopped(cl.api, err, lastErr)
		}
		if cl.quota != nil {
			if err := cl.quota.WaitUpTo(ctx, c.maxWait); err != nil {
				if IsRateLimited(err) {
					c.count(func(s *Stats) { s.QuotaRejected++ })
				}
				if ctx.Err() != nil {
					return nil, stopped(cl.api, err, lastErr)
				}
				// A *quota.Error or a store error; either names the quota.
				return nil, fmt.Errorf("wecom: %w", err)
			}
		}
		var tok string
		if cl.token != nil {
			var err error
			if tok, err = c.token(ctx, *cl.token); err != nil {
				return nil, err
			}
		}
		out := PT(new(T))
		err := c.send(ctx, cl, tok, body, out)
		if err == nil {
			return (*T)(out), nil
		}
		lastErr = err
		code, _ := apiCode(err)
		if cl.token != nil && !refreshed && IsTokenInvalid(err) {
			// The token was revoked or expired early: drop it (unless another
			// caller already replaced it) and retry once with a fresh one,
			// unless it is too young to refetch.
			refreshed = true
			if c.invalidate(*cl.token, tok) {
				c.log.LogAttrs(ctx, slog.LevelInfo, "wecom: token rejected, refreshing",
					slog.String("api", cl.api), slog.Int("errcode", code), slog.String("token", cl.token.kind()))
				continue
			}
		}
		// A rejected token is never retried with backoff: the same token
		// would be rejected again.
		retry := IsRetryable(err) && !IsTokenInvalid(err) && attempt < c.retry.MaxAttempts
		c.log.LogAttrs(ctx, slog.LevelWarn, "wecom: call failed",
			slog.String("api", cl.api), slog.Int("errcode", code), slog.Int("attempt", attempt),
			slog.Bool("retry", retry), slog.String("error", err.Error()))
		if code == CodeNoPermission || code == CodeNoAppPermission {
			// Which token a permission error came with is the first thing to
			// check (§9 #3).
			c.log.LogAttrs(ctx, slog.LevelWarn, "wecom: permission error",
				slog.String("api", cl.api), slog.Int("errcode", code), slog.String("token", tokenKind(cl.token)))
		}
		if !retry {
			return nil, err
		}
		wait := c.backoff(attempt)
		if ra, ok := RetryAfter(err); ok {
			if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= ra {
				// Waiting would only end in the context's error; return the
				// answer instead, so the caller can defer the work by as much.
				return nil, err
			}
			wait = max(wait, ra)
		}
		if err := c.sleep(ctx, wait); err != nil {
			return nil, stopped(cl.api, err, lastErr)
		}
		attempt++
	}
}

// stopped reports that ctx ended the retries, keeping the last call's error
// in the message (it never contains a token).
func stopped(api string, ctxErr, last error) error {
	if last == nil {
		return fmt.Errorf("wecom: %s: %w", api, ctxErr)
	}
	return fmt.Errorf("wecom: %s: retries stopped: %w (last error: %s)", api, ctxErr, last.Error())
}

// backoff returns the delay before retry number attempt (1-based): full
// jitter over an exponentially growing cap, so that many clients failing
// together do not retry together.
func (c *Client) backoff(attempt int) time.Duration {
	ceiling := c.retry.MaxDelay
	if attempt-1 < 32 {
		if d := c.retry.BaseDelay << (attempt - 1); d > 0 && d < ceiling {
			ceiling = d
		}
	}
	return rand.N(ceiling + 1)
}

// send makes one HTTP request and decodes its answer into out.
func (c *Client) send(ctx context.Context, cl call, tok string, body []byte, out commonResponse) error {
	q := url.Values{}
	for k, v := range cl.query {
		q[k] = v
	}
	if tok != "" {
		// Set, not Add: a retry must never carry the stale token as well.
		q.Set("access_token", tok)
	}
	u := c.base + cl.api
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, u, rd)
	if err != nil {
		return fmt.Errorf("wecom: %s: build request: %w", cl.api, redact(err))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.count(func(s *Stats) { s.Calls[cl.api]++ })
	resp, err := c.http.Do(req)
	if err != nil {
		c.count(func(s *Stats) { s.TransportErrors++ })
		return &transportError{api: cl.api, err: redact(err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		c.count(func(s *Stats) { s.TransportErrors++ })
		return &HTTPStatusError{API: cl.api, StatusCode: resp.StatusCode,
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), c.now())}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		// A connection dropped mid-body: as retryable as a failed dial.
		c.count(func(s *Stats) { s.TransportErrors++ })
		return &transportError{api: cl.api, err: redact(err)}
	}
	if len(data) > maxResponseBytes {
		return fmt.Errorf("wecom: %s: response larger than %d bytes", cl.api, maxResponseBytes)
	}
	// WeCom's every answer carries errcode. Anything else (a proxy's HTML
	// page, a truncated body) says nothing about the request, so it is
	// retried like a dropped connection. The body is never quoted: a proxy
	// page may echo the URL, access_token included.
	var probe struct {
		ErrCode *int `json:"errcode"`
	}
	if err := json.Unmarshal(data, &probe); err != nil || probe.ErrCode == nil {
		c.count(func(s *Stats) { s.TransportErrors++ })
		return &transportError{api: cl.api, err: fmt.Errorf("response is not a WeCom answer (%d bytes, Content-Type %q)",
			len(data), resp.Header.Get("Content-Type"))}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("wecom: %s: decode response: %w", cl.api, err)
	}
	if rc := out.common(); rc.ErrCode != 0 {
		c.count(func(s *Stats) { s.Errors[rc.ErrCode]++ })
		return &APIError{API: cl.api, Code: rc.ErrCode, Msg: rc.ErrMsg}
	}
	return nil
}

// maxRetryAfter caps a Retry-After: a longer one is more likely a broken
// proxy than a plan, and the caller's own backoff takes over after it.
const maxRetryAfter = time.Hour

// parseRetryAfter reads a Retry-After header, delay-seconds or an HTTP date
// (RFC 9110 §10.2.3), as a wait from now. Absent, unparsable or past: zero.
func parseRetryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(strings.TrimSpace(h), 10, 64); err == nil {
		d = time.Duration(min(max(secs, 0), int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// redact removes the query string (access_token, corpsecret) from the URL
// an *url.Error carries, keeping its cause so timeouts stay detectable.
func redact(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	u := ue.URL
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i]
	}
	return &url.Error{Op: ue.Op, URL: u, Err: ue.Err}
}
