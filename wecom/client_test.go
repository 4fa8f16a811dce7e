package wecom_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/wecom"
)

func TestNewClient(t *testing.T) {
	t.Parallel()

	valid := func() wecom.Config {
		return wecom.Config{CorpID: testCorpID, CorpSecret: testSecret}
	}

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		c, err := wecom.NewClient(valid())
		require.NoError(t, err)
		c.Close()
	})

	for _, tt := range []struct {
		name  string
		mod   func(*wecom.Config)
		field string
	}{
		{"MissingCorpIDNamesField", func(c *wecom.Config) { c.CorpID = "" }, "Config.CorpID"},
		{"MissingCorpSecretNamesField", func(c *wecom.Config) { c.CorpSecret = "" }, "Config.CorpSecret"},
		{"BadPendingTokenNamesField", func(c *wecom.Config) { c.PendingToken = "sideways" }, "Config.PendingToken"},
		{"BadBaseURLNamesField", func(c *wecom.Config) { c.BaseURL = "qyapi.weixin.qq.com" }, "Config.BaseURL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid()
			tt.mod(&cfg)
			_, err := wecom.NewClient(cfg)
			require.ErrorContains(t, err, tt.field)
			require.NotContains(t, err.Error(), testSecret)
		})
	}
}

func TestClient_UnionIDToPendingID(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		tb := setupPending(t, pendingOK)

		pid, err := tb.callPending(t.Context())
		require.NoError(t, err)
		require.Equal(t, "p-test-union", pid)

		reqs := tb.requests(wecom.APIUnionIDToPendingID)
		require.Len(t, reqs, 1)
		require.Equal(t, map[string]any{"unionid": "test-union", "openid": "test-open"}, reqs[0].Body)
		require.Equal(t, "tok-1", reqs[0].Token)
		got := tb.requests(wecom.APIGetToken)
		require.Len(t, got, 1)
		require.Equal(t, testCorpID, got[0].Query.Get("corpid"))
		require.Equal(t, testSecret, got[0].Query.Get("corpsecret"))
	})

	// Transient failures: the client backs off and the call succeeds in the end.
	for _, tt := range []struct {
		name     string
		failure  handlerFunc
		failures int
	}{
		{"SystemBusyRetriedThenSuccess", always(wecom.CodeSystemBusy, "system busy"), 2},
		{"ConcurrencyLimitRetried", always(wecom.CodeAPIConcurrentOutOfLimit, "api concurrent out of limit"), 1},
		{"HTTP5xxRetried", httpStatus(http.StatusBadGateway), 1},
		{"DroppedConnectionRetried", hangUp, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tb := setupPending(t, firstThen(tt.failures, tt.failure, pendingOK))

			pid, err := tb.callPending(t.Context())
			require.NoError(t, err)
			require.Equal(t, "p-test-union", pid)
			require.Equal(t, tt.failures+1, tb.calls(wecom.APIUnionIDToPendingID))
			sleeps := tb.sleepDurations()
			require.Len(t, sleeps, tt.failures)
			// Full jitter under an exponential cap: 200ms, then 400ms.
			for i, d := range sleeps {
				require.LessOrEqual(t, d, 200*time.Millisecond<<i, "sleep %d", i)
			}
		})
	}

	t.Run("SystemBusyUntilAttemptsExhausted", func(t *testing.T) {
		t.Parallel()
		tb := setupPending(t, always(wecom.CodeSystemBusy, "system busy"), func(c *wecom.Config) {
			c.Retry = wecom.RetryPolicy{MaxAttempts: 4, BaseDelay: time.Second, MaxDelay: 3 * time.Second}
		})

		_, err := tb.callPending(t.Context())
		var ae *wecom.APIError
		require.ErrorAs(t, err, &ae)
		require.Equal(t, wecom.APIError{API: wecom.APIUnionIDToPendingID, Code: -1, Msg: "system busy"}, *ae)
		require.Equal(t, errClass{retryable: true}, classify(err))
		require.Equal(t, 4, tb.calls(wecom.APIUnionIDToPendingID))
		sleeps := tb.sleepDurations()
		require.Len(t, sleeps, 3)
		for i, capd := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second} {
			require.GreaterOrEqual(t, sleeps[i], time.Duration(0))
			require.LessOrEqual(t, sleeps[i], capd, "sleep %d", i)
		}
	})

	// Failures the client returns without a backoff retry: the typed error
	// WeCom's answer becomes, classified for the caller, after no more calls
	// than the kind allows.
	const pendingAPI = wecom.APIUnionIDToPendingID
	for _, tt := range []struct {
		name        string
		err         error // what WeCom answers, as the client should return it
		maxAttempts int
		want        errClass
		calls       int // of unionid_to_pending_id
		tokens      int // of gettoken
	}{
		{"FreqLimitReturnedTypedWithoutRetry", &wecom.APIError{API: pendingAPI, Code: wecom.CodeAPIFreqOutOfLimit, Msg: "api freq out of limit"}, 0, errClass{rateLimited: true}, 1, 1},
		{"TokenRejectedTwiceGivesUp", &wecom.APIError{API: pendingAPI, Code: wecom.CodeTokenExpired, Msg: "access_token expired"}, 0, errClass{tokenInvalid: true, retryable: true}, 2, 2},
		{"InvalidSecretAfterRefreshIsPermanent", &wecom.APIError{API: pendingAPI, Code: wecom.CodeInvalidSecret, Msg: "invalid credential"}, 0, errClass{tokenInvalid: true, permanent: true}, 2, 2},
		{"NoPermissionIsPermanent", &wecom.APIError{API: pendingAPI, Code: wecom.CodeNoPermission, Msg: "no privilege to access/modify contact/party/agent"}, 0, errClass{permanent: true}, 1, 1},
		{"NotCustomerYetHasOwnPredicate", &wecom.APIError{API: pendingAPI, Code: wecom.CodeNotCustomerYet, Msg: "external contact relationship not exist"}, 0, errClass{notCustomerYet: true}, 1, 1},
		{"HTTP4xxExhaustedIsRetryable", &wecom.HTTPStatusError{API: pendingAPI, StatusCode: http.StatusForbidden}, 2, errClass{retryable: true}, 2, 1},
		// Retried to the limit, and still retryable for the caller.
		{"HTTP5xxExhaustedIsRetryable", &wecom.HTTPStatusError{API: pendingAPI, StatusCode: http.StatusServiceUnavailable}, 2, errClass{retryable: true}, 2, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tb *testBundle
			answer := answerWith(tt.err)
			tb = setupPending(t, func(w http.ResponseWriter, req apiRequest) any {
				if wecom.IsTokenInvalid(tt.err) {
					// A token rejected the moment it is issued is not
					// refetched (TokenRefreshInterval); let it age first.
					tb.clock.Advance(time.Minute)
				}
				return answer(w, req)
			}, func(c *wecom.Config) { c.Retry.MaxAttempts = tt.maxAttempts })

			_, err := tb.callPending(t.Context())
			got := reflect.New(reflect.TypeOf(tt.err)) // *T for errors.As, T being a pointer type
			require.ErrorAs(t, err, got.Interface())
			require.Equal(t, tt.err, got.Elem().Interface())
			require.Equal(t, tt.want, classify(err))
			require.Equal(t, tt.calls, tb.calls(wecom.APIUnionIDToPendingID))
			require.Equal(t, tt.tokens, tb.calls(wecom.APIGetToken))
		})
	}

	t.Run("NoPermissionLogsToken", func(t *testing.T) {
		t.Parallel()
		tb := setupPending(t, always(wecom.CodeNoPermission, "no privilege to access/modify contact/party/agent"))

		_, err := tb.callPending(t.Context())
		require.True(t, wecom.IsPermanent(err))
		require.Contains(t, tb.logs.String(), "token=upstream", "a permission error logs which token was used")
	})

	for _, code := range []int{wecom.CodeInvalidToken, wecom.CodeTokenExpired, wecom.CodeInvalidSecret} {
		t.Run(fmt.Sprintf("TokenRejected%dRefreshesOnceAndRetries", code), func(t *testing.T) {
			t.Parallel()
			var tb *testBundle
			tb = setupPending(t, func(w http.ResponseWriter, req apiRequest) any {
				if req.Token == "tok-1" {
					return tb.rejectLater(code)
				}
				return pendingOK(w, req)
			})

			pid, err := tb.callPending(t.Context())
			require.NoError(t, err)
			require.Equal(t, "p-test-union", pid)
			require.Equal(t, 2, tb.calls(wecom.APIGetToken))
			reqs := tb.requests(wecom.APIUnionIDToPendingID)
			require.Len(t, reqs, 2)
			// Set, not Add: the retry carries only the new token.
			require.Equal(t, []string{"tok-2"}, reqs[1].Query["access_token"])
			require.Empty(t, tb.sleepDurations(), "a token refresh is not a backoff retry")
		})
	}

	t.Run("GetTokenInvalidSecretNotRetried", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.handle(wecom.APIGetToken, always(wecom.CodeInvalidSecret, "invalid credential"))

		_, err := tb.callPending(t.Context())
		var ae *wecom.APIError
		require.ErrorAs(t, err, &ae)
		require.Equal(t, wecom.APIGetToken, ae.API)
		require.True(t, wecom.IsPermanent(err))
		require.NotContains(t, err.Error(), testSecret)
		require.Equal(t, 1, tb.calls(wecom.APIGetToken))
		require.Equal(t, 0, tb.calls(wecom.APIUnionIDToPendingID))
	})

	t.Run("ContextCancelStopsBackoff", func(t *testing.T) {
		t.Parallel()
		sleeping := make(chan struct{})
		tb := setupPending(t, always(wecom.CodeSystemBusy, "system busy"), func(c *wecom.Config) {
			c.Sleep = func(ctx context.Context, _ time.Duration) error {
				close(sleeping)
				<-ctx.Done()
				return ctx.Err()
			}
		})

		cctx, cancel := context.WithCancel(t.Context())
		go func() {
			<-sleeping
			cancel()
		}()
		_, err := tb.callPending(cctx)
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorContains(t, err, "errcode -1")
		require.False(t, wecom.IsRetryable(err))
		require.Equal(t, 1, tb.calls(wecom.APIUnionIDToPendingID))
	})

	t.Run("EmptyArgumentsRefusedLocally", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)

		_, err := tb.client.UnionIDToPendingID(t.Context(), "", "test-open")
		require.ErrorIs(t, err, wecom.ErrInvalidArgument)
		require.True(t, wecom.IsPermanent(err))
		require.Equal(t, 0, tb.calls(wecom.APIGetToken))
	})

	t.Run("MissingPendingIDIsError", func(t *testing.T) {
		t.Parallel()
		tb := setupPending(t, func(http.ResponseWriter, apiRequest) any { return ok() })

		_, err := tb.callPending(t.Context())
		require.ErrorContains(t, err, "no pending_id")
	})

	t.Run("QuotaExhaustedMakesNoCall", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		lim := newLimiter(t, quota.Config{
			Key: "pending", Windows: []quota.Window{{Length: time.Hour, Limit: 2}}, Now: clock.Now,
		})
		tb := setupPending(t, pendingOK, func(c *wecom.Config) { c.PendingIDQuota = lim; c.Now = clock.Now })

		for range 2 {
			_, err := tb.callPending(t.Context())
			require.NoError(t, err)
		}
		_, err := tb.callPending(t.Context())
		var qe *quota.Error
		require.ErrorAs(t, err, &qe)
		require.True(t, wecom.IsRateLimited(err))
		require.Equal(t, time.Hour, qe.Window)
		require.Equal(t, clock.Now().Add(61*time.Minute), qe.RetryAt)
		require.Equal(t, 2, tb.calls(wecom.APIUnionIDToPendingID))
		require.EqualValues(t, 1, tb.client.Stats().QuotaRejected)
	})

	t.Run("QuotaPacingWaitsUpToQuotaMaxWait", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		var slept []time.Duration
		lim := newLimiter(t, quota.Config{
			Key: "pending", Windows: []quota.Window{{Length: time.Hour, Limit: 3600}}, Now: clock.Now,
			Smooth: true, Burst: 1,
			Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); clock.Advance(d); return nil },
		})
		withQuota := func(maxWait time.Duration) func(*wecom.Config) {
			return func(c *wecom.Config) { c.PendingIDQuota = lim; c.Now = clock.Now; c.QuotaMaxWait = maxWait }
		}
		tb := setupPending(t, pendingOK, withQuota(time.Second))

		for range 2 {
			_, err := tb.callPending(t.Context())
			require.NoError(t, err)
		}
		require.Equal(t, []time.Duration{time.Second}, slept, "the second call waited for the 1 s pacing gap")

		tb2 := setupPending(t, pendingOK, withQuota(time.Second/2))
		_, err := tb2.callPending(t.Context())
		var qe *quota.Error
		require.ErrorAs(t, err, &qe, "a gap longer than QuotaMaxWait is returned, not waited for")
		require.True(t, qe.Pacing)
		require.Equal(t, 0, tb2.calls(wecom.APIUnionIDToPendingID))
	})

	t.Run("QuotaCountsEveryAttempt", func(t *testing.T) {
		t.Parallel()
		lim := newLimiter(t, quota.Config{
			Key: "pending", Windows: wecom.PendingIDWindows(100, 1000, 10000), Now: newFakeClock().Now,
		})
		tb := setupPending(t, firstThen(1, always(wecom.CodeSystemBusy, "system busy"), pendingOK),
			func(c *wecom.Config) { c.PendingIDQuota = lim })

		_, err := tb.callPending(t.Context())
		require.NoError(t, err)
		// WeCom may count a failed call too, so the limiter does.
		require.EqualValues(t, 2, lim.Usage()[0].Used)
	})
}

func TestClient_TokenCache(t *testing.T) {
	t.Parallel()

	t.Run("ConcurrentMissesFetchOnce", func(t *testing.T) {
		t.Parallel()
		tb := setupPending(t, pendingOK)

		callConcurrently(t, tb, 100)
		require.Equal(t, 1, tb.calls(wecom.APIGetToken))
		require.Equal(t, 100, tb.calls(wecom.APIUnionIDToPendingID))
	})

	t.Run("ConcurrentRejectionsRefreshOnce", func(t *testing.T) {
		t.Parallel()
		var mu sync.Mutex
		revoked := map[string]bool{}
		tb := setupPending(t, func(w http.ResponseWriter, req apiRequest) any {
			mu.Lock()
			bad := revoked[req.Token]
			mu.Unlock()
			if bad {
				return fail(wecom.CodeInvalidToken, "invalid access_token")
			}
			return pendingOK(w, req)
		})
		_, err := tb.callPending(t.Context())
		require.NoError(t, err)
		tb.clock.Advance(time.Minute)
		mu.Lock()
		revoked["tok-1"] = true // WeCom revokes the cached token early
		mu.Unlock()

		callConcurrently(t, tb, 100)
		require.Equal(t, 2, tb.calls(wecom.APIGetToken), "one initial fetch and exactly one refresh")
	})

	// expiresIn is the token lifetime gettoken grants; the margin before
	// expiry is 5 min, or half the lifetime when that is shorter.
	for _, tt := range []struct {
		name      string
		expiresIn int
		valid     time.Duration // how long a fetched token is used
	}{
		{"ExpiryRefetchesWithFakeClock", 7200, 7200*time.Second - 5*time.Minute},
		{"ShortLifetimeUsesHalfAsMargin", 60, 30 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tb := setupPending(t, pendingOK)
			tb.handle(wecom.APIGetToken, func(_ http.ResponseWriter, req apiRequest) any {
				return ok("access_token", fmt.Sprintf("tok-%d", req.N), "expires_in", tt.expiresIn)
			})
			call := func() {
				t.Helper()
				_, err := tb.callPending(t.Context())
				require.NoError(t, err)
			}

			call()
			tb.clock.Advance(tt.valid - time.Second) // still valid 1 s before
			call()
			require.Equal(t, 1, tb.calls(wecom.APIGetToken))
			tb.clock.Advance(time.Second)
			call()
			require.Equal(t, 2, tb.calls(wecom.APIGetToken))
			reqs := tb.requests(wecom.APIUnionIDToPendingID)
			require.Equal(t, "tok-2", reqs[2].Token)
		})
	}

	// WeCom blocks frequent gettoken, and within a token's validity it
	// answers the same token anyway: a persistent 42001 must not make every
	// call fetch a token (48 fetches in 12 s before the fix).
	for name, interval := range map[string]time.Duration{"Default": 0, "Configured": time.Minute} {
		t.Run("PersistentRejectionRefreshesAtMostOncePer"+name+"Interval", func(t *testing.T) {
			t.Parallel()
			tb := setup(t, func(c *wecom.Config) { c.TokenRefreshInterval = interval })
			tb.handle(wecom.APIUnionIDToPendingID, func(http.ResponseWriter, apiRequest) any {
				return fail(wecom.CodeTokenExpired, "access_token expired")
			})
			want := 5 * time.Second
			if interval > 0 {
				want = interval
			}

			start := tb.clock.Now()
			for range 48 {
				_, err := tb.client.UnionIDToPendingID(t.Context(), "test-union", "test-open")
				require.True(t, wecom.IsTokenInvalid(err))
				require.True(t, wecom.IsRetryable(err), "the caller retries later")
				require.False(t, wecom.IsPermanent(err))
				tb.clock.Advance(250 * time.Millisecond)
			}
			elapsed := tb.clock.Now().Sub(start)
			require.LessOrEqual(t, tb.calls(wecom.APIGetToken), 1+int(elapsed/want))
			require.GreaterOrEqual(t, tb.calls(wecom.APIGetToken), int(elapsed/want), "still refreshes once per interval")
			require.Empty(t, tb.sleepDurations(), "a rejected token is not retried with backoff")
		})
	}

	t.Run("FailedFetchNotCached", func(t *testing.T) {
		t.Parallel()
		tb := setupPending(t, pendingOK)
		tb.handle(wecom.APIGetToken, firstThen(1, always(40013, "invalid corpid"), func(http.ResponseWriter, apiRequest) any {
			return ok("access_token", "tok-good", "expires_in", 7200)
		}))

		_, err := tb.callPending(t.Context())
		require.True(t, wecom.IsConfigFault(err))
		require.True(t, wecom.IsBlocked(err), "a wrong corp id blocks gettoken")
		_, err = tb.callPending(t.Context())
		require.True(t, wecom.IsBlocked(err), "no gettoken storm while blocked")
		require.Equal(t, 1, tb.calls(wecom.APIGetToken))
		tb.clock.Advance(wecom.MinProbeInterval)
		_, err = tb.callPending(t.Context())
		require.NoError(t, err, "the probe found it fixed; nothing was cached")
		require.Equal(t, 2, tb.calls(wecom.APIGetToken))
	})
}

// callConcurrently makes n UnionIDToPendingID calls at once, each with its
// own unionid, and requires them all to succeed.
func callConcurrently(t *testing.T, tb *testBundle, n int) {
	t.Helper()
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := tb.client.UnionIDToPendingID(t.Context(), fmt.Sprintf("test-u%d", i), "test-open")
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestClient_Secrets(t *testing.T) {
	t.Parallel()

	t.Run("TransportErrorHasNoToken", func(t *testing.T) {
		t.Parallel()
		tb := setupPending(t, hangUp, func(c *wecom.Config) { c.Retry.MaxAttempts = 1 })

		_, err := tb.callPending(t.Context())
		require.Error(t, err)
		require.True(t, wecom.IsRetryable(err))
		var ue *url.Error
		require.ErrorAs(t, err, &ue)
		require.NotContains(t, err.Error(), "tok-1")
		require.NotContains(t, err.Error(), "access_token")
		require.Contains(t, err.Error(), wecom.APIUnionIDToPendingID)
	})

	t.Run("GetTokenTransportErrorHasNoSecret", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		base := srv.URL
		srv.Close() // connections to base are now refused
		c, err := wecom.NewClient(wecom.Config{
			BaseURL: base, CorpID: testCorpID, CorpSecret: testSecret,
			Retry: wecom.RetryPolicy{MaxAttempts: 1},
		})
		require.NoError(t, err)
		t.Cleanup(c.Close)

		_, err = c.UnionIDToPendingID(t.Context(), "test-union", "test-open")
		require.Error(t, err)
		require.True(t, wecom.IsRetryable(err))
		require.NotContains(t, err.Error(), testSecret)
		require.NotContains(t, err.Error(), "corpsecret")
	})

	t.Run("LogsHaveNoTokenOrSecret", func(t *testing.T) {
		t.Parallel()
		var tb *testBundle
		tb = setupPending(t, func(w http.ResponseWriter, req apiRequest) any {
			switch req.N {
			case 1:
				return tb.rejectLater(wecom.CodeTokenExpired)
			case 2:
				return hangUp(w, req)
			case 3:
				return fail(wecom.CodeSystemBusy, "system busy")
			}
			return pendingOK(w, req)
		})

		_, err := tb.callPending(t.Context())
		require.NoError(t, err)
		logs := tb.logs.String()
		require.Contains(t, logs, "errcode=42001")
		require.Contains(t, logs, "errcode=-1")
		for _, secret := range []string{testSecret, "tok-1", "tok-2", "access_token="} {
			require.NotContains(t, logs, secret)
		}
	})
}

func TestClient_ExternalUserIDToPendingID(t *testing.T) {
	t.Parallel()

	t.Run("MoreThan100IDsRefusedLocally", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)

		_, err := tb.client.ExternalUserIDToPendingID(t.Context(), "", "", testIDs(101))
		require.ErrorIs(t, err, wecom.ErrTooManyIDs)
		require.True(t, wecom.IsPermanent(err))
		require.Equal(t, 0, tb.calls(wecom.APIGetToken))
		require.Equal(t, 0, tb.calls(wecom.APIExternalUserIDToPendingID))
	})

	t.Run("Exactly100IDsSent", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.answer(wecom.APIExternalUserIDToPendingID, "result", []any{})

		res, err := tb.client.ExternalUserIDToPendingID(t.Context(), "", "", testIDs(100))
		require.NoError(t, err)
		require.Len(t, res, 100)
		require.Len(t, tb.requests(wecom.APIExternalUserIDToPendingID)[0].Body["external_userid"], 100)
	})

	t.Run("OmittedAndEmptyIDsHaveNoPendingID", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.handle(wecom.APIExternalUserIDToPendingID, func(http.ResponseWriter, apiRequest) any {
			// Out of order, one id answered "", one omitted.
			return ok("result", []map[string]string{
				{"external_userid": "wmC", "pending_id": "pC"},
				{"external_userid": "wmB", "pending_id": ""},
			})
		})

		res, err := tb.client.ExternalUserIDToPendingID(t.Context(), "", "", []string{"wmA", "wmB", "wmC", "wmA"})
		require.NoError(t, err)
		require.Equal(t, []wecom.PendingResult{
			{ExternalUserID: "wmA"}, {ExternalUserID: "wmB"},
			{ExternalUserID: "wmC", PendingID: "pC"}, {ExternalUserID: "wmA"},
		}, res)
		reqs := tb.requests(wecom.APIExternalUserIDToPendingID)
		require.Equal(t, map[string]any{"external_userid": []any{"wmA", "wmB", "wmC"}}, reqs[0].Body,
			"duplicates sent once and no chat_id when empty")
	})

	t.Run("ChatIDSent", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.answer(wecom.APIExternalUserIDToPendingID, "result", []any{})

		_, err := tb.client.ExternalUserIDToPendingID(t.Context(), "", "wrtestchat", []string{"wmA"})
		require.NoError(t, err)
		require.Equal(t, "wrtestchat", tb.requests(wecom.APIExternalUserIDToPendingID)[0].Body["chat_id"])
	})

	t.Run("NoIDsMakesNoCall", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)

		res, err := tb.client.ExternalUserIDToPendingID(t.Context(), "", "", nil)
		require.NoError(t, err)
		require.Empty(t, res)
		require.Equal(t, 0, tb.calls(wecom.APIGetToken))
	})

	t.Run("UpstreamTokenByDefault", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.answer(wecom.APIExternalUserIDToPendingID, "result", []any{})

		_, err := tb.client.ExternalUserIDToPendingID(t.Context(), "wwtestdown", "", []string{"wmA"})
		require.NoError(t, err)
		require.Equal(t, "tok-1", tb.requests(wecom.APIExternalUserIDToPendingID)[0].Token)
		require.Equal(t, 0, tb.calls(wecom.APICorpGetToken))
	})

	t.Run("DownstreamTokenFromConfiguredAgent", func(t *testing.T) {
		t.Parallel()
		tb := setupDownstream(t, map[string]int64{"wwtestdown": 1001})
		tb.answer(wecom.APIExternalUserIDToPendingID, "result", []any{})

		_, err := tb.client.ExternalUserIDToPendingID(t.Context(), "wwtestdown", "", []string{"wmA"})
		require.NoError(t, err)
		corpReqs := tb.requests(wecom.APICorpGetToken)
		require.Len(t, corpReqs, 1)
		require.Equal(t, "tok-1", corpReqs[0].Token, "downstream token fetched with the upstream token")
		require.Equal(t, map[string]any{"corpid": "wwtestdown", "business_type": float64(1), "agentid": float64(1001)}, corpReqs[0].Body)
		require.Equal(t, "down-wwtestdown-1001-1", tb.requests(wecom.APIExternalUserIDToPendingID)[0].Token)
		require.Equal(t, 0, tb.calls(wecom.APIListAppShareInfo))
	})

	t.Run("DownstreamAgentLookedUpOnce", func(t *testing.T) {
		t.Parallel()
		tb := setupDownstream(t, nil)
		tb.handle(wecom.APIListAppShareInfo, func(_ http.ResponseWriter, req apiRequest) any {
			require.Equal(t, "wwtestdown", req.Body["corpid"])
			return ok("ending", 1, "corp_list", []map[string]any{{"corpid": "wwtestdown", "corp_name": "Dealer", "agentid": 2002}})
		})
		tb.answer(wecom.APIExternalUserIDToPendingID, "result", []any{})

		for range 2 {
			_, err := tb.client.ExternalUserIDToPendingID(t.Context(), "wwtestdown", "", []string{"wmA"})
			require.NoError(t, err)
		}
		require.Equal(t, 1, tb.calls(wecom.APIListAppShareInfo))
		require.Equal(t, 1, tb.calls(wecom.APICorpGetToken))
		require.Equal(t, float64(2002), tb.requests(wecom.APICorpGetToken)[0].Body["agentid"])
	})

	t.Run("DownstreamCorpNotShared", func(t *testing.T) {
		t.Parallel()
		tb := setupDownstream(t, nil)
		tb.answer(wecom.APIListAppShareInfo, "ending", 1, "corp_list", []any{})

		_, err := tb.client.ExternalUserIDToPendingID(t.Context(), "wwtestgone", "", []string{"wmA"})
		require.ErrorIs(t, err, wecom.ErrNotShared)
		require.True(t, wecom.IsPermanent(err))
		require.Equal(t, 0, tb.calls(wecom.APIExternalUserIDToPendingID))
	})

	t.Run("DownstreamTokenRejectedRefreshesDownstreamOnly", func(t *testing.T) {
		t.Parallel()
		tb := setupDownstream(t, map[string]int64{"wwtestdown": 1001})
		tb.handle(wecom.APIExternalUserIDToPendingID, func(_ http.ResponseWriter, req apiRequest) any {
			if req.N == 1 {
				return tb.rejectLater(wecom.CodeTokenExpired)
			}
			return ok("result", []map[string]string{{"external_userid": "wmA", "pending_id": "pA"}})
		})

		res, err := tb.client.ExternalUserIDToPendingID(t.Context(), "wwtestdown", "", []string{"wmA"})
		require.NoError(t, err)
		require.Equal(t, "pA", res[0].PendingID)
		require.Equal(t, 2, tb.calls(wecom.APICorpGetToken))
		require.Equal(t, 1, tb.calls(wecom.APIGetToken))
		require.Equal(t, "down-wwtestdown-1001-2", tb.requests(wecom.APIExternalUserIDToPendingID)[1].Token)
	})

	t.Run("DownstreamNeedsCorpID", func(t *testing.T) {
		t.Parallel()
		tb := setupDownstream(t, nil)

		_, err := tb.client.ExternalUserIDToPendingID(t.Context(), "", "", []string{"wmA"})
		require.ErrorIs(t, err, wecom.ErrInvalidArgument)
	})
}

// testIDs returns n distinct external_userids.
func testIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("wmtest%d", i)
	}
	return ids
}

// setupDownstream is setup for a client using downstream tokens, with the
// given configured agents (nil: looked up) and corp tokens handled.
func setupDownstream(t *testing.T, agents map[string]int64) *testBundle {
	t.Helper()
	tb := setup(t, func(c *wecom.Config) {
		c.PendingToken = wecom.PendingTokenDownstream
		c.DownstreamAgents = agents
	})
	handleCorpToken(tb)
	return tb
}

// handleCorpToken answers corpgroup/corp/gettoken with down-CORP-AGENT-N.
func handleCorpToken(tb *testBundle) {
	tb.handle(wecom.APICorpGetToken, func(_ http.ResponseWriter, req apiRequest) any {
		return ok("access_token", fmt.Sprintf("down-%s-%v-%d", req.Body["corpid"], req.Body["agentid"], req.N), "expires_in", 7200)
	})
}

func TestClient_DownstreamToken(t *testing.T) {
	t.Parallel()

	t.Run("CachedPerCorpAndAgent", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		handleCorpToken(tb)

		keys := []struct {
			corp  string
			agent int64
		}{{"wwtestA", 1}, {"wwtestA", 2}, {"wwtestB", 1}}
		got := map[string]bool{}
		for range 2 {
			for _, k := range keys {
				tok, err := tb.client.DownstreamToken(t.Context(), k.corp, k.agent)
				require.NoError(t, err)
				require.True(t, strings.HasPrefix(tok, fmt.Sprintf("down-%s-%d-", k.corp, k.agent)))
				got[tok] = true
			}
		}
		require.Len(t, got, 3, "one token per (corp, agent), reused on the second round")
		reqs := tb.requests(wecom.APICorpGetToken)
		require.Len(t, reqs, 3)
		for _, r := range reqs {
			require.Equal(t, float64(1), r.Body["business_type"])
			require.Empty(t, r.Query.Get("agentid"), "agentid goes in the body")
		}
	})

	t.Run("RequiresCorpAndAgent", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)

		_, err := tb.client.DownstreamToken(t.Context(), "wwtestA", 0)
		require.ErrorIs(t, err, wecom.ErrInvalidArgument)
	})
}

func TestClient_ListAppShareInfo(t *testing.T) {
	t.Parallel()

	t.Run("PagesUntilEnding", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.handle(wecom.APIListAppShareInfo, func(_ http.ResponseWriter, req apiRequest) any {
			switch req.Body["cursor"] {
			case "":
				return ok("ending", 0, "next_cursor", "c1", "corp_list", []map[string]any{{"corpid": "wwtest1", "corp_name": "One", "agentid": 11}})
			case "c1":
				return ok("ending", 0, "next_cursor", "c2", "corp_list", []map[string]any{{"corpid": "wwtest2", "corp_name": "Two", "agentid": 12}})
			default:
				return ok("ending", 1, "corp_list", []map[string]any{{"corpid": "wwtest3", "corp_name": "Three", "agentid": 13}})
			}
		})

		corps, err := tb.client.ListAppShareInfo(t.Context())
		require.NoError(t, err)
		require.Equal(t, []wecom.SharedCorp{
			{CorpID: "wwtest1", CorpName: "One", AgentID: 11},
			{CorpID: "wwtest2", CorpName: "Two", AgentID: 12},
			{CorpID: "wwtest3", CorpName: "Three", AgentID: 13},
		}, corps)
		reqs := tb.requests(wecom.APIListAppShareInfo)
		require.Len(t, reqs, 3)
		require.Equal(t, map[string]any{"agentid": float64(testAgentID), "business_type": float64(1), "limit": float64(100), "cursor": ""}, reqs[0].Body)
		require.Equal(t, "c2", reqs[2].Body["cursor"])
		require.Empty(t, reqs[0].Query.Get("agentid"))
	})

	t.Run("RepeatedCursorIsError", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.answer(wecom.APIListAppShareInfo, "ending", 0, "next_cursor", "same", "corp_list", []any{})

		_, err := tb.client.ListAppShareInfo(t.Context())
		require.ErrorContains(t, err, "pagination does not end")
		require.Equal(t, 2, tb.calls(wecom.APIListAppShareInfo))
	})

	t.Run("RequiresAgentID", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, func(c *wecom.Config) { c.AgentID = 0 })

		_, err := tb.client.ListAppShareInfo(t.Context())
		require.ErrorIs(t, err, wecom.ErrInvalidArgument)
		require.ErrorContains(t, err, "Config.AgentID")
		require.Equal(t, 0, tb.calls(wecom.APIGetToken))
	})

	t.Run("ListedAgentsServeDownstreamTokens", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, func(c *wecom.Config) { c.PendingToken = wecom.PendingTokenDownstream })
		handleCorpToken(tb)
		tb.answer(wecom.APIListAppShareInfo, "ending", 1, "corp_list", []map[string]any{{"corpid": "wwtest1", "corp_name": "One", "agentid": 11}})
		tb.answer(wecom.APIExternalUserIDToPendingID, "result", []any{})

		_, err := tb.client.ListAppShareInfo(t.Context())
		require.NoError(t, err)
		_, err = tb.client.ExternalUserIDToPendingID(t.Context(), "wwtest1", "", []string{"wmA"})
		require.NoError(t, err)
		require.Equal(t, 1, tb.calls(wecom.APIListAppShareInfo))
		require.Equal(t, float64(11), tb.requests(wecom.APICorpGetToken)[0].Body["agentid"])
	})
}

func TestClient_UnionIDToExternalUserID(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.answer(wecom.APIUnionIDToExternalUserID, "external_userid_info", []map[string]string{
			{"corpid": "wwtest1", "external_userid": "wmX1"},
			{"corpid": "wwtest2", "external_userid": "wmX2"},
		})

		got, err := tb.client.UnionIDToExternalUserID(t.Context(), "test-union", "test-open", "")
		require.NoError(t, err)
		require.Equal(t, []wecom.ExternalUserIDInfo{
			{CorpID: "wwtest1", ExternalUserID: "wmX1"}, {CorpID: "wwtest2", ExternalUserID: "wmX2"},
		}, got)
		require.Equal(t, map[string]any{"unionid": "test-union", "openid": "test-open"},
			tb.requests(wecom.APIUnionIDToExternalUserID)[0].Body, "corpid omitted when empty")
	})

	t.Run("CorpIDSent", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.answer(wecom.APIUnionIDToExternalUserID)

		got, err := tb.client.UnionIDToExternalUserID(t.Context(), "test-union", "test-open", "wwtest1")
		require.NoError(t, err)
		require.Empty(t, got)
		require.Equal(t, "wwtest1", tb.requests(wecom.APIUnionIDToExternalUserID)[0].Body["corpid"])
	})

	t.Run("QuotaExhaustedMakesNoCall", func(t *testing.T) {
		t.Parallel()
		lim := newLimiter(t, quota.Config{
			Key: "external", Windows: wecom.ExternalUserIDWindows(1, 10), Now: newFakeClock().Now,
		})
		tb := setup(t, func(c *wecom.Config) { c.ExternalUserIDQuota = lim })
		tb.answer(wecom.APIUnionIDToExternalUserID)

		_, err := tb.client.UnionIDToExternalUserID(t.Context(), "test-union", "test-open", "")
		require.NoError(t, err)
		_, err = tb.client.UnionIDToExternalUserID(t.Context(), "test-union", "test-open", "")
		require.True(t, wecom.IsRateLimited(err))
		require.Equal(t, 1, tb.calls(wecom.APIUnionIDToExternalUserID))
	})
}

func TestClient_Stats(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.handle(wecom.APIUnionIDToPendingID, func(w http.ResponseWriter, req apiRequest) any {
		switch req.N {
		case 1:
			return fail(wecom.CodeSystemBusy, "system busy")
		case 2:
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return nil
		case 4:
			return fail(wecom.CodeAPIFreqOutOfLimit, "api freq out of limit")
		}
		return pendingOK(w, req)
	})

	_, err := tb.client.UnionIDToPendingID(t.Context(), "test-union", "test-open") // -1, 502, ok
	require.NoError(t, err)
	_, err = tb.client.UnionIDToPendingID(t.Context(), "test-union", "test-open") // 45009
	require.True(t, wecom.IsRateLimited(err))

	st := tb.client.Stats()
	require.Equal(t, map[string]int64{wecom.APIGetToken: 1, wecom.APIUnionIDToPendingID: 4}, st.Calls)
	require.Equal(t, map[int]int64{-1: 1, 45009: 1}, st.Errors)
	require.EqualValues(t, 1, st.TransportErrors)

	st.Calls[wecom.APIGetToken] = 99 // a copy: the client's counters are unaffected
	require.EqualValues(t, 1, tb.client.Stats().Calls[wecom.APIGetToken])
}

func TestClient_CallerCancelDuringTokenFetch(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	release := make(chan struct{})
	arrived := make(chan struct{})
	tb.handle(wecom.APIGetToken, func(_ http.ResponseWriter, req apiRequest) any {
		if req.N == 1 {
			close(arrived)
			<-release
		}
		return ok("access_token", fmt.Sprintf("tok-%d", req.N), "expires_in", 7200)
	})
	tb.handle(wecom.APIUnionIDToPendingID, pendingOK)

	// The first caller gives up while the shared fetch is in flight; the
	// fetch is detached from it, so a second caller still gets the token.
	cctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-arrived
		cancel()
	}()
	_, err := tb.callPending(cctx)
	require.ErrorIs(t, err, context.Canceled)
	close(release)

	_, err = tb.callPending(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, tb.calls(wecom.APIGetToken))
}

func BenchmarkClient_UnionIDToPendingID(b *testing.B) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/gettoken") {
			_, _ = w.Write([]byte(`{"errcode":0,"errmsg":"ok","access_token":"tok-bench","expires_in":7200}`))
			return
		}
		_, _ = w.Write([]byte(`{"errcode":0,"errmsg":"ok","pending_id":"p-bench"}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	b.Cleanup(srv.Close)
	c, err := wecom.NewClient(wecom.Config{BaseURL: srv.URL, CorpID: testCorpID, CorpSecret: testSecret})
	require.NoError(b, err)
	b.Cleanup(c.Close)

	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.UnionIDToPendingID(b.Context(), "test-union", "test-open"); err != nil {
			b.Fatal(err)
		}
	}
	// Keep-alive works when this stays at 1 whatever b.N is.
	b.ReportMetric(float64(conns.Load()), "conns")
}
