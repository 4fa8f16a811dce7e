package wecom_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/wecom"
)

func TestClient_ConfigurationFaultBlocksTheAPI(t *testing.T) {
	t.Parallel()
	const msg = "not allow to access from your ip, from ip: 203.0.113.7"
	tb := setupPending(t, firstThen(3, always(wecom.CodeIPNotAllowed, msg), pendingOK))
	start := tb.clock.Now()

	// The first answer blocks the API: no retry, no further call.
	_, err := tb.callPending(t.Context())
	require.True(t, wecom.IsBlocked(err))
	require.True(t, wecom.IsConfigFault(err))
	until, ok := wecom.BlockedUntil(err)
	require.True(t, ok)
	require.Equal(t, start.Add(wecom.MinProbeInterval), until)
	_, err = tb.callPending(t.Context())
	require.True(t, wecom.IsBlocked(err))
	require.Equal(t, 1, tb.calls(wecom.APIUnionIDToPendingID), "blocked calls reach nobody")
	require.Empty(t, tb.sleepDurations(), "and are not retried")

	bl := tb.client.Stats().Blocked
	require.Len(t, bl, 1)
	require.Equal(t, wecom.Blocked{API: wecom.APIUnionIDToPendingID, Code: wecom.CodeIPNotAllowed, Msg: msg,
		Fix: wecom.ConfigFix(wecom.CodeIPNotAllowed), Since: start, NextProbeAt: until}, bl[0])

	// Probes: one a minute, then less often while the fault lasts.
	tb.clock.Advance(wecom.MinProbeInterval)
	_, err = tb.callPending(t.Context())
	require.True(t, wecom.IsBlocked(err))
	require.Equal(t, 2, tb.calls(wecom.APIUnionIDToPendingID))
	until, _ = wecom.BlockedUntil(err)
	require.Equal(t, tb.clock.Now().Add(2*wecom.MinProbeInterval), until, "the probe interval doubles")

	tb.clock.Advance(2 * wecom.MinProbeInterval)
	_, err = tb.callPending(t.Context())
	require.True(t, wecom.IsBlocked(err))
	require.Equal(t, 3, tb.calls(wecom.APIUnionIDToPendingID))

	// Fixed in the console: the next probe succeeds and the block is gone.
	tb.clock.Advance(4 * wecom.MinProbeInterval)
	_, err = tb.callPending(t.Context())
	require.NoError(t, err)
	require.Empty(t, tb.client.Stats().Blocked)
	_, err = tb.callPending(t.Context())
	require.NoError(t, err)
}

func TestClient_ConfigurationFaultOfOneDealerBlocksOnlyIt(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.handle(wecom.APIExternalUserIDToPendingID, func(_ http.ResponseWriter, req apiRequest) any {
		if req.N == 1 {
			return fail(wecom.CodeAppNotShared, "app not in share scope")
		}
		return ok("result", []any{})
	})
	_, err := tb.client.ExternalUserIDToPendingID(t.Context(), "wwdealer1", "", []string{"wm1"})
	require.True(t, wecom.IsBlocked(err))
	_, err = tb.client.ExternalUserIDToPendingID(t.Context(), "wwdealer2", "", []string{"wm2"})
	require.NoError(t, err, "another dealer's lookups go on")
	_, err = tb.client.ExternalUserIDToPendingID(t.Context(), "wwdealer1", "", []string{"wm1"})
	require.True(t, wecom.IsBlocked(err))
	require.Equal(t, "wwdealer1", tb.client.Stats().Blocked[0].CorpID)
}

// tokenStoreFunc is a wecom.TokenStore.
type tokenStoreFunc func(ctx context.Context, key, reject string, now time.Time, fetch func(context.Context) (wecom.SharedToken, error)) (wecom.SharedToken, error)

func (f tokenStoreFunc) Token(ctx context.Context, key, reject string, now time.Time, fetch func(context.Context) (wecom.SharedToken, error)) (wecom.SharedToken, error) {
	return f(ctx, key, reject, now, fetch)
}

// TestClient_TokenStore: with a TokenStore the client takes its tokens from
// it, and tells it which token WeCom refused so that another process's
// copy of it is not handed back.
func TestClient_TokenStore(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		rejects []string
	)
	shared := tokenStoreFunc(func(ctx context.Context, _, reject string, _ time.Time, fetch func(context.Context) (wecom.SharedToken, error)) (wecom.SharedToken, error) {
		mu.Lock()
		rejects = append(rejects, reject)
		mu.Unlock()
		return fetch(ctx)
	})
	tb := setupPending(t, func(w http.ResponseWriter, req apiRequest) any {
		if req.N == 2 {
			return fail(wecom.CodeInvalidToken, "invalid access_token")
		}
		return pendingOK(w, req)
	}, func(c *wecom.Config) { c.TokenStore = shared })

	_, err := tb.callPending(t.Context())
	require.NoError(t, err)
	tb.clock.Advance(time.Minute) // older than TokenRefreshInterval: a refusal refetches
	_, err = tb.callPending(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2, tb.calls(wecom.APIGetToken))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, rejects, 2)
	require.Empty(t, rejects[0])
	require.Equal(t, "tok-1", rejects[1], "the refused token is named")
}

// TestClient_FreqLimitFromWeComTeachesTheLimiter: WeCom answers 45009 to a
// call the limiter allowed (another app spends the corp's quota): the
// limiter treats the window as spent and the next call is not made.
func TestClient_FreqLimitFromWeComTeachesTheLimiter(t *testing.T) {
	t.Parallel()
	var lim *quota.Limiter
	tb := setupPending(t, firstThen(1, always(wecom.CodeAPIFreqOutOfLimit, "api freq out of limit"), pendingOK), func(c *wecom.Config) {
		var err error
		lim, err = quota.New(context.Background(), quota.Config{Key: "k", Now: c.Now,
			Windows: wecom.PendingIDWindows(100, 1000, 10000)})
		require.NoError(t, err)
		c.PendingIDQuota = lim
	})
	_, err := tb.callPending(t.Context())
	require.True(t, wecom.IsRateLimited(err))
	u := lim.Usage()[0]
	require.True(t, u.External)
	require.Equal(t, tb.clock.Now().Add(time.Hour), u.SpentUntil)

	_, err = tb.callPending(t.Context())
	var qe *quota.Error
	require.ErrorAs(t, err, &qe, "refused locally")
	require.Equal(t, 1, tb.calls(wecom.APIUnionIDToPendingID), "WeCom is not asked again")
}

// TestClient_TokenFreqLimitIsNotTheAPIs: a 45009 answered to the token
// fetch says nothing about the calling API's quota.
func TestClient_TokenFreqLimitIsNotTheAPIs(t *testing.T) {
	t.Parallel()
	var lim *quota.Limiter
	tb := setupPending(t, pendingOK, func(c *wecom.Config) {
		var err error
		lim, err = quota.New(context.Background(), quota.Config{Key: "k", Now: c.Now, Windows: wecom.PendingIDWindows(100, 1000, 10000)})
		require.NoError(t, err)
		c.PendingIDQuota = lim
	})
	tb.handle(wecom.APIGetToken, always(wecom.CodeAPIFreqOutOfLimit, "api freq out of limit"))
	_, err := tb.callPending(t.Context())
	require.Error(t, err)
	require.Zero(t, tb.calls(wecom.APIUnionIDToPendingID))
	require.False(t, lim.Usage()[0].External, "gettoken's limit is not unionid_to_pending_id's")
}

// TestClient_ProbeFailingOnTheTokenKeepsTheBlock: a probe that fails before
// reaching the blocked API (its token fetch fails) learns nothing about it.
func TestClient_ProbeFailingOnTheTokenKeepsTheBlock(t *testing.T) {
	t.Parallel()
	tb := setupPending(t, firstThen(1, always(wecom.CodeIPNotAllowed, "from ip: 203.0.113.7"), pendingOK))
	_, err := tb.callPending(t.Context())
	require.True(t, wecom.IsBlocked(err))

	// Time passes: the token expires, and its refetch fails at probe time.
	tb.handle(wecom.APIGetToken, always(40013, "invalid corpid"))
	tb.clock.Advance(3 * time.Hour)
	_, err = tb.callPending(t.Context())
	require.Error(t, err)
	var apis []string
	for _, b := range tb.client.Stats().Blocked {
		apis = append(apis, b.API)
	}
	require.Contains(t, apis, wecom.APIUnionIDToPendingID, "the probe never reached the API: still blocked")
}

// TestClient_SharedDownstreamTokenNeverNests: with a TokenStore, a
// downstream token's fetch gets the upstream token first, so no store call
// (a database connection held during a fetch) waits inside another.
func TestClient_SharedDownstreamTokenNeverNests(t *testing.T) {
	t.Parallel()
	var depth, deepest atomic.Int32
	shared := tokenStoreFunc(func(ctx context.Context, _, _ string, _ time.Time, fetch func(context.Context) (wecom.SharedToken, error)) (wecom.SharedToken, error) {
		d := depth.Add(1)
		defer depth.Add(-1)
		if d > deepest.Load() {
			deepest.Store(d)
		}
		return fetch(ctx)
	})
	tb := setup(t, func(c *wecom.Config) { c.TokenStore = shared })
	tb.handle(wecom.APICorpGetToken, func(http.ResponseWriter, apiRequest) any {
		return map[string]any{"errcode": 0, "errmsg": "ok", "access_token": "down-tok", "expires_in": 7200}
	})
	tok, err := tb.client.DownstreamToken(t.Context(), "wwdealer1", 1000005)
	require.NoError(t, err)
	require.Equal(t, "down-tok", tok)
	require.EqualValues(t, 1, deepest.Load())
}
