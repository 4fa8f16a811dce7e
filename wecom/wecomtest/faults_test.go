package wecomtest_test

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

func TestFaults(t *testing.T) {
	t.Parallel()

	shareBody := func(s *wecomtest.Server) map[string]any {
		return map[string]any{"agentid": s.AgentID, "business_type": 1}
	}

	t.Run("ErrorRateAnswersSystemBusyAndIsCounted", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		p := b.srv.AddPerson()
		b.srv.SetFaults(wecomtest.Faults{ErrorRate: 1})
		r := register(t, b.srv, tok, p)
		require.Equal(t, -1, r.Errcode)
		require.Contains(t, r.Errmsg, "system busy")
		require.Equal(t, 1, b.srv.Calls(wecomtest.APIUnionIDToPendingID))
		require.Equal(t, map[int]int{-1: 1}, b.srv.Errcodes(wecomtest.APIUnionIDToPendingID))
		_, ok := b.srv.PendingIDOf(p)
		require.False(t, ok, "a faulted call has no effect")

		b.srv.SetFaults(wecomtest.Faults{})
		require.Equal(t, 0, register(t, b.srv, tok, p).Errcode)
	})

	t.Run("Status5xxRateAnswers503", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithFaults(wecomtest.Faults{Status5xxRate: 1}))
		resp := send(t, b.srv, http.MethodGet, wecomtest.APIGetToken,
			url.Values{"corpid": {b.srv.CorpID}, "corpsecret": {b.srv.CorpSecret}}, nil)
		resp.Body.Close()
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		st := b.srv.Stats()
		require.Equal(t, 1, st.Calls[wecomtest.APIGetToken])
		require.Equal(t, map[int]int{503: 1}, st.Statuses[wecomtest.APIGetToken])
		require.Empty(t, st.Errcodes[wecomtest.APIGetToken])
	})

	t.Run("DropRateClosesTheConnection", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		b.srv.SetFaults(wecomtest.Faults{DropRate: 1})
		_, err := trySend(b.srv, http.MethodPost, wecomtest.APIListAppShareInfo, url.Values{"access_token": {tok}}, shareBody(b.srv))
		require.Error(t, err)
		st := b.srv.Stats()
		require.Equal(t, 1, st.Calls[wecomtest.APIListAppShareInfo])
		require.Equal(t, 1, st.Dropped[wecomtest.APIListAppShareInfo])
		require.Empty(t, st.Statuses[wecomtest.APIListAppShareInfo])
	})

	// Ensure the delay honours the request context: a client that gives up
	// frees the handler, and the call is counted but never answered.
	t.Run("LatencyHonoursRequestContext", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithFaults(wecomtest.Faults{Latency: time.Hour}))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.srv.URL+wecomtest.PathPrefix+wecomtest.APIGetToken, nil)
		require.NoError(t, err)
		errc := make(chan error, 1)
		go func() {
			_, err := b.srv.HTTPClient().Do(req)
			errc <- err
		}()
		require.NoError(t, b.srv.Wait(waitCtx(t), func(st wecomtest.Stats) bool {
			return st.Calls[wecomtest.APIGetToken] == 1
		}))
		cancel()
		require.ErrorIs(t, <-errc, context.Canceled)
		require.NoError(t, b.srv.Wait(waitCtx(t), func(st wecomtest.Stats) bool {
			return st.Abandoned[wecomtest.APIGetToken] == 1
		}))
		st := b.srv.Stats()
		require.Equal(t, 1, st.Calls[wecomtest.APIGetToken])
		require.Empty(t, st.Errcodes[wecomtest.APIGetToken])
		require.Empty(t, st.Dropped[wecomtest.APIGetToken])
	})

	t.Run("ShortLatencyStillAnswers", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithFaults(wecomtest.Faults{Latency: time.Millisecond}))
		require.NotEmpty(t, mustToken(t, b.srv))
	})

	t.Run("APIsRestrictsTheRates", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithFaults(wecomtest.Faults{
			ErrorRate: 1, APIs: []string{wecomtest.APIExternalUserIDToPendingID},
		}))
		tok := mustToken(t, b.srv)
		require.Equal(t, 0, post[common](t, b.srv, wecomtest.APIListAppShareInfo, tok, shareBody(b.srv)).Errcode)
		require.Equal(t, -1, batch(t, b.srv, tok, "", "wmtest-any").Errcode)
	})

	t.Run("FaultsReturnsACopy", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		apis := []string{wecomtest.APIGetToken}
		b.srv.SetFaults(wecomtest.Faults{ErrorRate: 1, APIs: apis})
		apis[0] = "changed"
		got := b.srv.Faults()
		require.Equal(t, []string{wecomtest.APIGetToken}, got.APIs)
		got.APIs[0] = "changed"
		require.Equal(t, []string{wecomtest.APIGetToken}, b.srv.Faults().APIs)
	})

	// Ensure a seed gives the same sequence of faults, and a rate between 0
	// and 1 faults some calls but not all.
	t.Run("SeedMakesRatesDeterministic", func(t *testing.T) {
		t.Parallel()
		run := func() []int {
			b := setup(t, wecomtest.WithFaults(wecomtest.Faults{ErrorRate: 0.5, Seed: 42, APIs: []string{wecomtest.APIListAppShareInfo}}))
			tok := mustToken(t, b.srv)
			var codes []int
			for range 40 {
				codes = append(codes, post[common](t, b.srv, wecomtest.APIListAppShareInfo, tok, shareBody(b.srv)).Errcode)
			}
			return codes
		}
		first := run()
		require.Equal(t, first, run())
		require.Contains(t, first, 0)
		require.Contains(t, first, -1)
	})

	t.Run("FailNextScriptsAnswersInOrder", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		b.srv.FailNext(wecomtest.APIExternalUserIDToPendingID,
			wecomtest.Fault{Errcode: 84061}, wecomtest.Fault{Status: 502}, wecomtest.Fault{Drop: true})
		b.srv.FailNext(wecomtest.APIExternalUserIDToPendingID, wecomtest.Fault{Errcode: 45033})
		q := url.Values{"access_token": {tok}}
		body := map[string]any{"external_userid": []string{"wmtest-any"}}

		require.Equal(t, 84061, batch(t, b.srv, tok, "", "wmtest-any").Errcode)
		resp := send(t, b.srv, http.MethodPost, wecomtest.APIExternalUserIDToPendingID, q, body)
		resp.Body.Close()
		require.Equal(t, 502, resp.StatusCode)
		_, err := trySend(b.srv, http.MethodPost, wecomtest.APIExternalUserIDToPendingID, q, body)
		require.Error(t, err)
		require.Equal(t, 45033, batch(t, b.srv, tok, "", "wmtest-any").Errcode)
		require.Equal(t, 0, batch(t, b.srv, tok, "", "wmtest-any").Errcode)
		require.Equal(t, 0, post[common](t, b.srv, wecomtest.APIListAppShareInfo, tok, shareBody(b.srv)).Errcode, "other APIs unaffected")

		st := b.srv.Stats()
		require.Equal(t, 5, st.Calls[wecomtest.APIExternalUserIDToPendingID])
		require.Equal(t, map[int]int{84061: 1, 45033: 1, 0: 1}, st.Errcodes[wecomtest.APIExternalUserIDToPendingID])
		require.Equal(t, 1, st.Dropped[wecomtest.APIExternalUserIDToPendingID])
	})

	t.Run("UntrustedIPAnswers60020NamingTheCallersIP", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.srv.SetFaults(wecomtest.Faults{UntrustedIP: true})
		tok := mustToken(t, b.srv) // gettoken is not IP-restricted
		r := post[common](t, b.srv, wecomtest.APIListAppShareInfo, tok, shareBody(b.srv))
		require.Equal(t, 60020, r.Errcode)
		require.Contains(t, r.Errmsg, "from ip: 127.0.0.1,")
		require.Equal(t, 60020, batch(t, b.srv, tok, "", "wmtest-any").Errcode)

		b.srv.SetFaults(wecomtest.Faults{})
		require.Equal(t, 0, post[common](t, b.srv, wecomtest.APIListAppShareInfo, tok, shareBody(b.srv)).Errcode)
	})

	t.Run("Scripted60020NamesTheCallersIP", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		b.srv.FailNext(wecomtest.APIListAppShareInfo, wecomtest.Fault{Errcode: 60020}, wecomtest.Fault{Errcode: 60020, Msg: "from ip: 203.0.113.7"})
		require.Contains(t, post[common](t, b.srv, wecomtest.APIListAppShareInfo, tok, shareBody(b.srv)).Errmsg, "from ip: 127.0.0.1,")
		require.Equal(t, "from ip: 203.0.113.7", post[common](t, b.srv, wecomtest.APIListAppShareInfo, tok, shareBody(b.srv)).Errmsg)
	})

	t.Run("FailNextWinsOverRates", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		b.srv.SetFaults(wecomtest.Faults{Status5xxRate: 1})
		b.srv.FailNext(wecomtest.APIExternalUserIDToPendingID, wecomtest.Fault{Errcode: 84061})
		require.Equal(t, 84061, batch(t, b.srv, tok, "", "wmtest-any").Errcode)
	})

	// Ensure faults can change while calls are in flight; run with -race.
	t.Run("SetFaultsIsSafeDuringCalls", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := mustToken(t, b.srv)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() {
				for range 25 {
					resp, err := trySend(b.srv, http.MethodPost, wecomtest.APIListAppShareInfo, url.Values{"access_token": {tok}}, shareBody(b.srv))
					if err != nil {
						errs <- err
						return
					}
					resp.Body.Close()
				}
			})
		}
		for i := range 50 {
			b.srv.SetFaults(wecomtest.Faults{ErrorRate: float64(i%2) / 2, Seed: int64(i)})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Equal(t, 100, b.srv.Calls(wecomtest.APIListAppShareInfo))
	})
}
