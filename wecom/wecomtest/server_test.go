package wecomtest_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

func TestNewServer(t *testing.T) {
	t.Parallel()

	t.Run("StartsOnLoopback", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewServer()
		defer srv.Close()
		require.True(t, strings.HasPrefix(srv.URL, "http://127.0.0.1:"), srv.URL)
		require.NotEmpty(t, mustToken(t, srv))
	})

	t.Run("DefaultsLookFake", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewServer()
		defer srv.Close()
		require.True(t, strings.HasPrefix(srv.CorpID, "wwtest"), srv.CorpID)
		require.Equal(t, int64(1000002), srv.AgentID)
		require.True(t, strings.HasPrefix(srv.CorpSecret, "testsecret-"))
		require.NotNil(t, srv.Clock)
	})

	t.Run("SecretsDifferPerServer", func(t *testing.T) {
		t.Parallel()
		a, b := wecomtest.NewUnstartedServer(), wecomtest.NewUnstartedServer()
		require.NotEqual(t, a.CorpSecret, b.CorpSecret)
	})

	t.Run("OptionsApply", func(t *testing.T) {
		t.Parallel()
		clock := wecomtest.NewClock(t0)
		srv := wecomtest.NewServer(
			wecomtest.WithClock(clock),
			wecomtest.WithFaults(wecomtest.Faults{ErrorRate: 1}),
			wecomtest.WithQuotas(wecomtest.Quota{Hour: 1}, wecomtest.Quota{Hour: 2}),
			wecomtest.WithPendingForUnregistered(true),
		)
		defer srv.Close()
		require.Same(t, clock, srv.Clock)
		require.Equal(t, 1.0, srv.Faults().ErrorRate)
		require.Equal(t, wecomtest.Quota{Hour: 1}, srv.PendingQuota)
		require.Equal(t, wecomtest.Quota{Hour: 2}, srv.ExternalQuota)
		require.True(t, srv.PendingForUnregistered)
	})
}

func TestNewUnstartedServer(t *testing.T) {
	t.Parallel()

	t.Run("FieldsSetBeforeStartAreUsed", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewUnstartedServer()
		srv.CorpID = "wwtestothercorp001"
		srv.CorpSecret = "testsecret-fixed"
		srv.AgentID = 1000042
		srv.Clock = wecomtest.NewClock(t0)
		require.Empty(t, srv.URL)
		srv.Start()
		defer srv.Close()

		require.Equal(t, 0, getToken(t, srv, "wwtestothercorp001", "testsecret-fixed").Errcode)
		r := post[shareResp](t, srv, wecomtest.APIListAppShareInfo, mustToken(t, srv),
			map[string]any{"agentid": 1000042, "business_type": 1})
		require.Equal(t, 0, r.Errcode, r.Errmsg)
	})

	t.Run("ListenerSetBeforeStartIsUsed", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv := wecomtest.NewUnstartedServer()
		srv.Listener = l
		srv.Start()
		defer srv.Close()
		require.Equal(t, "http://"+l.Addr().String(), srv.URL)
		require.NotEmpty(t, mustToken(t, srv))
	})

	t.Run("StartTwicePanics", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewServer()
		defer srv.Close()
		require.PanicsWithValue(t, "wecomtest: Server already started", srv.Start)
	})

	t.Run("StartWithoutClockPanics", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewUnstartedServer()
		srv.Clock = nil
		require.PanicsWithValue(t, "wecomtest: Server.CorpID, CorpSecret and Clock must be set before Start", srv.Start)
	})

	t.Run("HTTPClientBeforeStartPanics", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewUnstartedServer()
		require.PanicsWithValue(t, "wecomtest: HTTPClient called before Start", func() { srv.HTTPClient() })
	})

	t.Run("CloseWithoutStart", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewUnstartedServer()
		srv.Close()
	})
}

func TestServer_Close(t *testing.T) {
	t.Parallel()

	t.Run("Idempotent", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewServer()
		srv.Close()
		srv.Close()
	})

	t.Run("RefusesCallsAfterwards", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewServer()
		srv.Close()
		_, err := http.Get(srv.URL + wecomtest.PathPrefix + wecomtest.APIGetToken)
		require.Error(t, err)
	})

	// Ensure Close cuts a latency delay short and returns only once the
	// delayed call has been answered (here: dropped) and counted.
	t.Run("CutsLatencyAndWaitsForCallInFlight", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewServer(wecomtest.WithFaults(wecomtest.Faults{Latency: time.Hour}))
		errc := make(chan error, 1)
		go func() {
			resp, err := trySend(srv, http.MethodPost, wecomtest.APIUnionIDToPendingID, nil, "{}")
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		require.NoError(t, srv.Wait(waitCtx(t), func(st wecomtest.Stats) bool {
			return st.Calls[wecomtest.APIUnionIDToPendingID] == 1
		}))
		srv.Close()
		require.Equal(t, 1, srv.Stats().Dropped[wecomtest.APIUnionIDToPendingID])
		require.Error(t, <-errc)
	})
}

func TestServer_Routing(t *testing.T) {
	t.Parallel()

	t.Run("UnknownPathIs404AndCounted", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		resp := send(t, b.srv, http.MethodPost, "nosuch/api", nil, "{}")
		resp.Body.Close()
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
		require.Equal(t, 1, b.srv.Calls("nosuch/api"))
		require.Equal(t, 1, b.srv.Stats().Statuses["nosuch/api"][http.StatusNotFound])
	})

	t.Run("WrongMethodIs405", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for api, method := range map[string]string{
			wecomtest.APIGetToken:                  http.MethodPost,
			wecomtest.APIUnionIDToPendingID:        http.MethodGet,
			wecomtest.APIExternalUserIDToPendingID: http.MethodGet,
		} {
			resp := send(t, b.srv, method, api, nil, nil)
			resp.Body.Close()
			require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, api)
			require.NotEmpty(t, resp.Header.Get("Allow"))
		}
	})

	t.Run("MalformedJSONIs47001", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		for _, api := range []string{
			wecomtest.APIDownstreamGetToken, wecomtest.APIListAppShareInfo, wecomtest.APIUnionIDToPendingID,
			wecomtest.APIExternalUserIDToPendingID, wecomtest.APIUnionIDToExternalUserID,
		} {
			r := post[common](t, b.srv, api, tok, `{"unionid": 12`)
			require.Equal(t, 47001, r.Errcode, api)
		}
	})

	t.Run("OversizedBodyIs47001", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		body := `{"external_userid":["` + strings.Repeat("a", 1<<20) + `"]}`
		r := post[common](t, b.srv, wecomtest.APIExternalUserIDToPendingID, mustToken(t, b.srv), body)
		require.Equal(t, 47001, r.Errcode)
	})

	t.Run("ErrmsgLooksLikeWeComAndHidesSecrets", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		r := getToken(t, b.srv, b.srv.CorpID, "testsecret-wrong")
		require.Equal(t, 40001, r.Errcode)
		require.Contains(t, r.Errmsg, "invalid credential")
		require.Contains(t, r.Errmsg, "e=40001")
		require.NotContains(t, r.Errmsg, "testsecret")
		require.NotContains(t, r.Errmsg, b.srv.CorpSecret)
	})

	t.Run("SuccessCarriesErrcodeZeroAndOK", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		resp := send(t, b.srv, http.MethodGet, wecomtest.APIGetToken,
			url.Values{"corpid": {b.srv.CorpID}, "corpsecret": {b.srv.CorpSecret}}, nil)
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, json.Unmarshal(raw, &m))
		require.Equal(t, 0.0, m["errcode"])
		require.Equal(t, "ok", m["errmsg"])
	})
}

func TestServer_Stats(t *testing.T) {
	t.Parallel()

	t.Run("CountsCallsAndErrcodesPerAPI", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		getToken(t, b.srv, b.srv.CorpID, "wrong")
		p := b.srv.AddPerson()
		mustRegister(t, b.srv, tok, p)
		register(t, b.srv, tok, wecomtest.Person{UnionID: "test-unobody", OpenID: "test-onobody"})

		require.Equal(t, 2, b.srv.Calls(wecomtest.APIGetToken))
		require.Equal(t, 2, b.srv.Calls(wecomtest.APIUnionIDToPendingID))
		require.Equal(t, 0, b.srv.Calls(wecomtest.APIExternalUserIDToPendingID))
		require.Equal(t, map[int]int{0: 1, 40001: 1}, b.srv.Errcodes(wecomtest.APIGetToken))
		require.Equal(t, map[int]int{0: 1, 610014: 1}, b.srv.Errcodes(wecomtest.APIUnionIDToPendingID))
		require.Equal(t, map[string]int{wecomtest.APIGetToken: 2, wecomtest.APIUnionIDToPendingID: 2}, b.srv.CallCounts())
		require.Equal(t, 2, b.srv.Stats().Statuses[wecomtest.APIGetToken][http.StatusOK])
	})

	t.Run("ReturnsCopies", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		mustToken(t, b.srv)
		counts := b.srv.CallCounts()
		counts[wecomtest.APIGetToken] = 99
		codes := b.srv.Errcodes(wecomtest.APIGetToken)
		codes[0] = 99
		st := b.srv.Stats()
		st.Errcodes[wecomtest.APIGetToken][0] = 99
		st.Calls[wecomtest.APIGetToken] = 99
		require.Equal(t, 1, b.srv.Calls(wecomtest.APIGetToken))
		require.Equal(t, map[int]int{0: 1}, b.srv.Errcodes(wecomtest.APIGetToken))
	})

	t.Run("WaitReturnsOnceConditionHolds", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 3 {
				resp, err := trySend(b.srv, http.MethodGet, wecomtest.APIGetToken, nil, nil)
				if err == nil {
					resp.Body.Close()
				}
			}
		}()
		err := b.srv.Wait(waitCtx(t), func(st wecomtest.Stats) bool {
			return st.Errcodes[wecomtest.APIGetToken][41002] == 3
		})
		require.NoError(t, err)
		<-done
	})

	t.Run("WaitReturnsCtxErr", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := b.srv.Wait(ctx, func(wecomtest.Stats) bool { return false })
		require.ErrorIs(t, err, context.Canceled)
	})
}

func TestGetToken(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		r1 := getToken(t, b.srv, b.srv.CorpID, b.srv.CorpSecret)
		r2 := getToken(t, b.srv, b.srv.CorpID, b.srv.CorpSecret)
		require.Equal(t, 0, r1.Errcode)
		require.Equal(t, 7200, r1.ExpiresIn)
		require.True(t, strings.HasPrefix(r1.AccessToken, "testtoken-"), r1.AccessToken)
		require.NotEqual(t, r1.AccessToken, r2.AccessToken, "tokens are random")
		for _, tok := range []string{r1.AccessToken, r2.AccessToken} {
			r := post[shareResp](t, b.srv, wecomtest.APIListAppShareInfo, tok,
				map[string]any{"agentid": b.srv.AgentID, "business_type": 1})
			require.Equal(t, 0, r.Errcode, "an older token stays valid")
		}
	})

	for _, tc := range []struct {
		name           string
		corpID, secret func(*wecomtest.Server) string
		code           int
	}{
		{"ErrWrongSecret40001", func(s *wecomtest.Server) string { return s.CorpID }, func(*wecomtest.Server) string { return "testsecret-nope" }, 40001},
		{"ErrWrongCorp40013", func(*wecomtest.Server) string { return "wwtestnosuchcorp01" }, func(s *wecomtest.Server) string { return s.CorpSecret }, 40013},
		{"ErrMissingCorpID41002", func(*wecomtest.Server) string { return "" }, func(s *wecomtest.Server) string { return s.CorpSecret }, 41002},
		{"ErrMissingSecret41004", func(s *wecomtest.Server) string { return s.CorpID }, func(*wecomtest.Server) string { return "" }, 41004},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			r := getToken(t, b.srv, tc.corpID(b.srv), tc.secret(b.srv))
			require.Equal(t, tc.code, r.Errcode)
			require.Empty(t, r.AccessToken)
		})
	}
}

func TestAccessToken(t *testing.T) {
	t.Parallel()

	listBody := func(s *wecomtest.Server) map[string]any {
		return map[string]any{"agentid": s.AgentID, "business_type": 1}
	}

	t.Run("Missing41001", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var r common
		do(t, b.srv, http.MethodPost, wecomtest.APIListAppShareInfo, nil, listBody(b.srv), &r)
		require.Equal(t, 41001, r.Errcode)
	})

	t.Run("Garbage40014", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		r := post[common](t, b.srv, wecomtest.APIListAppShareInfo, "testtoken-garbage", listBody(b.srv))
		require.Equal(t, 40014, r.Errcode)
	})

	t.Run("ExpiresAfter7200sOnTheFakeClock", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		b.clock.Advance(7199 * time.Second)
		require.Equal(t, 0, post[common](t, b.srv, wecomtest.APIListAppShareInfo, tok, listBody(b.srv)).Errcode)
		b.clock.Advance(time.Second)
		require.Equal(t, 42001, post[common](t, b.srv, wecomtest.APIListAppShareInfo, tok, listBody(b.srv)).Errcode)
		require.Equal(t, 0, post[common](t, b.srv, wecomtest.APIListAppShareInfo, mustToken(t, b.srv), listBody(b.srv)).Errcode)
	})

	t.Run("TokenLifetimeExpiresEarlyButAnnounces7200", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithFaults(wecomtest.Faults{TokenLifetime: time.Minute}))
		r := getToken(t, b.srv, b.srv.CorpID, b.srv.CorpSecret)
		require.Equal(t, 7200, r.ExpiresIn)
		b.clock.Advance(59 * time.Second)
		require.Equal(t, 0, post[common](t, b.srv, wecomtest.APIListAppShareInfo, r.AccessToken, listBody(b.srv)).Errcode)
		b.clock.Advance(time.Second)
		require.Equal(t, 42001, post[common](t, b.srv, wecomtest.APIListAppShareInfo, r.AccessToken, listBody(b.srv)).Errcode)
	})

	t.Run("TokenLifetimeAppliesToTokensIssuedAfterwards", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		before := mustToken(t, b.srv)
		b.srv.SetFaults(wecomtest.Faults{TokenLifetime: time.Minute})
		after := mustToken(t, b.srv)
		b.clock.Advance(time.Hour)
		require.Equal(t, 0, post[common](t, b.srv, wecomtest.APIListAppShareInfo, before, listBody(b.srv)).Errcode)
		require.Equal(t, 42001, post[common](t, b.srv, wecomtest.APIListAppShareInfo, after, listBody(b.srv)).Errcode)
	})

	t.Run("ExpireTokensRevokesAllIssued", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		up := mustToken(t, b.srv)
		d := b.srv.AddDealer("Dealer A")
		down := mustDownstreamToken(t, b.srv, d)
		b.srv.ExpireTokens()
		require.Equal(t, 42001, post[common](t, b.srv, wecomtest.APIListAppShareInfo, up, listBody(b.srv)).Errcode)
		require.Equal(t, 42001, batch(t, b.srv, down, "", "wmtest-any").Errcode)
		require.Equal(t, 0, post[common](t, b.srv, wecomtest.APIListAppShareInfo, mustToken(t, b.srv), listBody(b.srv)).Errcode)
	})
}
