package wecom

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/patrickmn/go-cache"
)

const (
	defaultTokenLifetime = 7200 * time.Second
	tokenMargin          = 5 * time.Minute
)

// tokenKey identifies a cached access_token. Tokens are valid for one app
// only, so the key is (corp, agentid), never the corp alone (§7 #8).
type tokenKey struct {
	corpID     string
	agentID    int64
	downstream bool
}

func (k tokenKey) String() string {
	return k.kind() + "/" + k.corpID + "/" + strconv.FormatInt(k.agentID, 10)
}

func (k tokenKey) kind() string {
	if k.downstream {
		return PendingTokenDownstream
	}
	return PendingTokenUpstream
}

func tokenKind(k *tokenKey) string {
	if k == nil {
		return "none"
	}
	return k.kind()
}

func (c *Client) upstreamKey() tokenKey {
	return tokenKey{corpID: c.cfg.CorpID, agentID: c.cfg.AgentID}
}

type tokenEntry struct {
	token     string
	fetchedAt time.Time // by Config.Now, when its fetch started
	expiresAt time.Time // by Config.Now
}

type tokenResp struct {
	respCommon
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

type corpTokenReq struct {
	CorpID       string `json:"corpid"`
	BusinessType int    `json:"business_type"`
	AgentID      int64  `json:"agentid"`
}

// businessTypeUpDown selects 上下游 in corpgroup APIs. The default 0 is
// 企业互联, so it is always sent explicitly (§4.2, §7 #13).
const businessTypeUpDown = 1

func (c *Client) cachedToken(key string) (string, bool) {
	v, ok := c.tokens.Get(key)
	if !ok {
		return "", false
	}
	e := v.(tokenEntry)
	if !c.now().Before(e.expiresAt) {
		return "", false
	}
	return e.token, true
}

// token returns a valid token for k, fetching it at most once however many
// callers miss at the same time.
func (c *Client) token(ctx context.Context, k tokenKey) (string, error) {
	key := k.String()
	if tok, ok := c.cachedToken(key); ok {
		return tok, nil
	}
	ch := c.flight.DoChan(key, func() (any, error) {
		// A caller that missed just before the previous fetch stored its
		// token would otherwise fetch again.
		if tok, ok := c.cachedToken(key); ok {
			return tok, nil
		}
		// Detached from the caller that happens to start the fetch, so its
		// cancellation cannot fail the others; Close still ends it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenFetchTimeout)
		defer cancel()
		stop := context.AfterFunc(c.bg, cancel)
		defer stop()
		return c.fetchToken(fctx, k)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", fmt.Errorf("wecom: %s token: %w", k.kind(), ctx.Err())
	}
}

// SharedToken is a token as a TokenStore keeps it.
type SharedToken struct {
	Token     string
	FetchedAt time.Time // when its fetch started
	ExpiresAt time.Time // when to stop using it (early, see tokenMargin)
}

// TokenStore shares access tokens between the processes of one deployment,
// so that one of them fetches a token while the others wait and then use
// it: WeCom blocks frequent gettoken calls. store.DB implements it.
type TokenStore interface {
	// Token returns the token kept under key if it is valid at now and is
	// not reject (one WeCom has just refused); otherwise it calls fetch,
	// with other processes' Token calls for key waiting, keeps its answer
	// and returns it.
	Token(ctx context.Context, key, reject string, now time.Time, fetch func(context.Context) (SharedToken, error)) (SharedToken, error)
}

func (c *Client) fetchToken(ctx context.Context, k tokenKey) (string, error) {
	key := k.String()
	var (
		t   SharedToken
		err error
	)
	if c.cfg.TokenStore != nil {
		if k.downstream {
			// A downstream fetch needs the upstream token: get it first, so
			// that the store's lock for this key (a database connection held
			// during the fetch) never waits for a second one.
			if _, err := c.token(ctx, c.upstreamKey()); err != nil {
				return "", err
			}
		}
		c.tokMu.Lock()
		reject := c.rejected[key]
		c.tokMu.Unlock()
		t, err = c.cfg.TokenStore.Token(ctx, key, reject, c.now(), func(ctx context.Context) (SharedToken, error) {
			return c.fetchFromWeCom(ctx, k)
		})
	} else {
		t, err = c.fetchFromWeCom(ctx, k)
	}
	if err != nil {
		return "", err
	}
	c.tokMu.Lock()
	c.tokens.Set(key, tokenEntry{token: t.Token, fetchedAt: t.FetchedAt, expiresAt: t.ExpiresAt}, cache.NoExpiration)
	c.tokMu.Unlock()
	return t.Token, nil
}

// fetchFromWeCom asks WeCom for k's token.
func (c *Client) fetchFromWeCom(ctx context.Context, k tokenKey) (SharedToken, error) {
	start := c.now()
	var (
		resp *tokenResp
		err  error
		api  = APIGetToken
	)
	if k.downstream {
		api = APICorpGetToken
		up := c.upstreamKey()
		resp, err = do[tokenResp](ctx, c, call{
			api: api, method: http.MethodPost, token: &up, corp: k.corpID,
			body: corpTokenReq{CorpID: k.corpID, BusinessType: businessTypeUpDown, AgentID: k.agentID},
		})
	} else {
		resp, err = do[tokenResp](ctx, c, call{
			api: api, method: http.MethodGet,
			query: url.Values{"corpid": {c.cfg.CorpID}, "corpsecret": {c.cfg.CorpSecret}},
		})
	}
	if err != nil {
		return SharedToken{}, err
	}
	if resp.AccessToken == "" {
		return SharedToken{}, fmt.Errorf("wecom: %s: response has no access_token", api)
	}
	life := time.Duration(resp.ExpiresIn) * time.Second
	if life <= 0 {
		life = defaultTokenLifetime
	}
	// Refresh early so a token never expires between our check and WeCom's;
	// for short lifetimes a fixed 5 min would leave nothing, so take half.
	margin := tokenMargin
	if life <= 2*tokenMargin {
		margin = life / 2
	}
	c.log.LogAttrs(ctx, slog.LevelInfo, "wecom: token fetched", slog.String("token", k.kind()),
		slog.String("corpid", k.corpID), slog.Int64("agentid", k.agentID), slog.Int64("expires_in", resp.ExpiresIn))
	return SharedToken{Token: resp.AccessToken, FetchedAt: start, ExpiresAt: start.Add(life - margin)}, nil
}

// invalidate drops the cached token for k if it is still tok, the one
// WeCom rejected, and reports whether a retry may get another token. A
// token another caller already replaced or dropped is kept, so 100 callers
// rejected together cause one fetch, not 100. A token fetched less than
// Config.TokenRefreshInterval ago is kept too: fetching again would only
// feed WeCom's gettoken blocking.
func (c *Client) invalidate(k tokenKey, tok string) bool {
	key := k.String()
	c.tokMu.Lock()
	defer c.tokMu.Unlock()
	v, ok := c.tokens.Get(key)
	if !ok || v.(tokenEntry).token != tok {
		return true
	}
	if c.now().Sub(v.(tokenEntry).fetchedAt) < c.cfg.TokenRefreshInterval {
		return false
	}
	c.tokens.Delete(key)
	// A shared store must not hand the refused token back.
	if c.rejected == nil {
		c.rejected = map[string]string{}
	}
	c.rejected[key] = tok
	return true
}

// DownstreamToken returns the shared app's access_token inside a downstream
// corp (corpgroup/corp/gettoken, business_type 1). agentID is the app's id
// inside that corp. Tokens are cached per (corp, agentid) and refreshed
// before they expire.
func (c *Client) DownstreamToken(ctx context.Context, corpID string, agentID int64) (string, error) {
	if corpID == "" || agentID == 0 {
		return "", fmt.Errorf("%w: %s: corpid and agentid are required", ErrInvalidArgument, APICorpGetToken)
	}
	return c.token(ctx, tokenKey{corpID: corpID, agentID: agentID, downstream: true})
}

// CheckToken fetches the upstream app's access_token, or finds it cached,
// and returns gettoken's error when WeCom refuses the corp id or secret
// (40001, 40013, 40091). The token itself stays inside the client, so a
// check cannot print it.
func (c *Client) CheckToken(ctx context.Context) error {
	_, err := c.token(ctx, c.upstreamKey())
	return err
}
