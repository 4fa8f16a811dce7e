package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/apiclient/openapitest"
	"github.com/pendinglink/pendinglink/crypto"
	"github.com/pendinglink/pendinglink/handlers"
	"github.com/pendinglink/pendinglink/internal/syncbuf"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
	"github.com/pendinglink/pendinglink/wecom"
)

const (
	testToken      = "QDG6eK"
	testAESKey     = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	testCorpID     = "wx5823bf96d3bd56c7"
	testDealerCorp = "wwtestdealer0001"
	testAdminToken = "test-admin-token-0123456789"
)

// testBundle is what a callback test needs: a real server on a real SQLite
// store, and the crypto WeCom would use.
type testBundle struct {
	db      *store.DB
	srv     *httptest.Server
	handler http.Handler
	crypt   *crypto.Crypt
	now     time.Time
	nonce   atomic.Int64
	policy  *handlers.ReceiveIDPolicy
	// client checks every exchange against the OpenAPI document.
	client *http.Client
}

type setupOpts struct {
	mode        string
	maxAge      time.Duration
	store       handlers.Store
	bodyLimit   int64
	concurrency int
	// refresh is Config.RefreshReceiveIDs.
	refresh func(ctx context.Context) error
	// logger and trustedProxies are Config's Logger and TrustedProxies.
	logger         *slog.Logger
	trustedProxies []*net.IPNet
}

// testConfig is the handlers' Config the tests' servers start from: st,
// the test token and AES key, the receive-id policy of mode for testCorpID
// and testDealerCorp, the admin token, and reg as Registerer and Gatherer.
func testConfig(t *testing.T, st handlers.Store, mode string, reg *prometheus.Registry) handlers.Config {
	t.Helper()
	cr, err := crypto.New(testToken, testAESKey)
	require.NoError(t, err)
	policy, err := handlers.NewReceiveIDPolicy(mode, testCorpID, []string{testDealerCorp})
	require.NoError(t, err)
	return handlers.Config{
		Store: st, Crypt: cr, ReceiveIDs: policy, AdminToken: testAdminToken,
		Registerer: reg, Gatherer: reg,
	}
}

// serve serves h until t ends, and returns the server and a client that
// checks every exchange against the OpenAPI document.
func serve(t *testing.T, h http.Handler) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, &http.Client{Transport: openapitest.MustNew(t).Transport(t, srv.Client().Transport)}
}

func setup(t *testing.T, opts setupOpts) *testBundle {
	t.Helper()
	db := storetest.MustOpen(t, store.Config{Jobs: pipeline.Policy{}})
	if opts.mode == "" {
		opts.mode = handlers.ReceiveIDAllowlist
	}
	var st handlers.Store = db
	if opts.store != nil {
		st = opts.store
	}
	cfg := testConfig(t, st, opts.mode, prometheus.NewRegistry())
	tb := &testBundle{db: db, crypt: cfg.Crypt, now: time.Unix(1700000000, 0), policy: cfg.ReceiveIDs}
	cfg.MaxAge, cfg.Now = opts.maxAge, func() time.Time { return tb.now }
	cfg.BodyLimit, cfg.CallbackConcurrency = opts.bodyLimit, opts.concurrency
	cfg.RefreshReceiveIDs = opts.refresh
	cfg.Logger, cfg.TrustedProxies = opts.logger, opts.trustedProxies
	s, err := handlers.New(cfg)
	require.NoError(t, err)
	tb.handler = s
	tb.srv, tb.client = serve(t, s)
	return tb
}

// addEvent is an add_external_contact as a dealer's member would trigger it.
func addEvent(corp, external string) wecom.Event {
	return wecom.Event{
		ToUserName: corp, FromUserName: "sys", CreateTime: 1700000000, MsgType: "event",
		Event: wecom.EventChangeExternalContact, ChangeType: wecom.ChangeAddExternalContact,
		UserID: "zhangsan", ExternalUserID: external, State: "s", WelcomeCode: "W",
	}
}

// seal encrypts msg as WeCom would and returns the URL and body of the POST.
func (tb *testBundle) seal(t *testing.T, msg []byte, receiveID string) (string, []byte) {
	t.Helper()
	ts := strconv.FormatInt(tb.now.Unix(), 10)
	nonce := strconv.FormatInt(tb.nonce.Add(1), 10)
	body, sig, err := tb.crypt.Seal(msg, receiveID, receiveID, "1000002", ts, nonce, nil)
	require.NoError(t, err)
	q := url.Values{"msg_signature": {sig}, "timestamp": {ts}, "nonce": {nonce}}
	return tb.srv.URL + handlers.DefaultCallbackPath + "?" + q.Encode(), body
}

func (tb *testBundle) post(t *testing.T, u string, body []byte) (int, string) {
	t.Helper()
	resp, err := tb.client.Post(u, "text/xml", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func (tb *testBundle) postEvent(t *testing.T, ev wecom.Event, receiveID string) (int, string) {
	t.Helper()
	msg, err := ev.Marshal()
	require.NoError(t, err)
	u, body := tb.seal(t, msg, receiveID)
	return tb.post(t, u, body)
}

// getStatus GETs /v1/status with the Authorization header auth ("": none).
// The caller closes the body.
func (tb *testBundle) getStatus(t *testing.T, auth string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, tb.srv.URL+"/v1/status", nil)
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := tb.client.Do(req)
	require.NoError(t, err)
	return resp
}

func (tb *testBundle) status(t *testing.T) apiclient.StatusResponse {
	t.Helper()
	resp := tb.getStatus(t, "Bearer "+testAdminToken)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var st apiclient.StatusResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}

// rowCounts counts what a callback can write: events and jobs.
func (tb *testBundle) rowCounts(t *testing.T) (events, jobs int) {
	t.Helper()
	require.NoError(t, tb.db.SQL().QueryRow(`SELECT count(*) FROM events`).Scan(&events))
	require.NoError(t, tb.db.SQL().QueryRow(`SELECT count(*) FROM river_job`).Scan(&jobs))
	return events, jobs
}

func TestCallback_VectorC(t *testing.T) {
	t.Parallel()
	// Ensure the protocol reference's Vector C, sent exactly as WeCom would, is stored once.
	tb := setup(t, setupOpts{maxAge: 24 * time.Hour})
	const (
		sig     = "2db8a29ba0b7f204c9c8d90f4fabbcace6201709"
		encrypt = "sKqRbbiSUnDhFHOvPjtUMQt4o93Z7RIw5jBB62MqEINhKaM9eMS5BYRP3YqfaOp4WaT0GPBltRR0d6Brb8l/KpYiGIMpzeVwh+7K8G46kDK+dHgPEuZ/WJz1/DSInCiNv9YJuEZkqHZ8otPbIbb+X354iMCha+E0HGKTBV43XPdgzLDDEtp/tLniVIEChMkf4/Z5U+kwLTmeCzV+3KX1Vkh+nkOJkz4F8ya2xO48rXJb/8q+UYaEfjW6gkEdJPHqFgMpORb3G6ZE2h969yBUEWH9Jkfzv2RfhqRWKKp1VBmyqtcKYGH+hfnnkAH8YLmD0rUYWYneBOjj3ez+/AxJSXpoJtIZKI9uB49li0eMeeaMiHp5hU374kqZ4hmY2LY1fsABN8blebydEzcNqtuz/OP6uFDFTApAGlW2taIJHNDKPt2bhSq2DLcpSoAL13AgJt07jev2Ey9BTn8I/PyGYpJfUHmI3DosV1jHwI1JdERiN/t0BdwnMb/+0hxPYfCRvRIUEeoRsxa9wXxYYLFZvjI1RFcaLkQED48oEn+yobJDBlrLTwsXht18ZWekVYQoSfe+jCK02P5JhCX1fXl/QN09YFV/CLBTCCNQ17JRyYU16IJxyA4p88sdeuG8gVtJI0kMq+ohHigYa3+61xTFBLlWI65NYRtTq1rssCDAt9Wzgdpa5ude/EG9NL/SLTiG65h10MiE2HmC3oTfyM8FJA=="
	)
	q := url.Values{"msg_signature": {sig}, "timestamp": {"1700000000"}, "nonce": {"1234567890"}}
	u := tb.srv.URL + handlers.DefaultCallbackPath + "?" + q.Encode()
	body := []byte("<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[" + encrypt + "]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>")

	t.Run("POSTStoresOneEvent", func(t *testing.T) {
		code, respBody := tb.post(t, u, body)
		require.Equal(t, http.StatusOK, code)
		require.Empty(t, respBody)
		var kind, external string
		require.NoError(t, tb.db.SQL().QueryRow(`SELECT kind, external_userid FROM events`).Scan(&kind, &external))
		require.Equal(t, wecom.KindAddExternalContact, kind)
		require.Equal(t, "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA", external)

		// Replay: the identical POST answers 200 again and stores nothing new.
		code, _ = tb.post(t, u, body)
		require.Equal(t, http.StatusOK, code)
		events, jobs := tb.rowCounts(t)
		require.Equal(t, 1, events)
		require.Equal(t, 1, jobs)
		require.EqualValues(t, 1, tb.status(t).Events.Duplicate)
	})

	t.Run("GETEchoesExactPlaintext", func(t *testing.T) {
		q := url.Values{"msg_signature": {sig}, "timestamp": {"1700000000"}, "nonce": {"1234567890"}, "echostr": {encrypt}}
		raw := q.Encode()
		require.Equal(t, 15, strings.Count(raw, "%2B"), "echostr must travel URL-encoded")
		resp, err := tb.client.Get(tb.srv.URL + handlers.DefaultCallbackPath + "?" + raw)
		require.NoError(t, err)
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain"))
		require.Len(t, got, 486)
		require.True(t, strings.HasPrefix(string(got), "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]>"))
		require.True(t, strings.HasSuffix(string(got), "</xml>"), "no trailing newline or quotes")
	})
}

func TestCallback_Receive(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		// Ensure an authentic add is answered with an empty 200 after its event and job are stored.
		tb := setup(t, setupOpts{})
		code, body := tb.postEvent(t, addEvent(testDealerCorp, "wmtest0001"), testCorpID)
		require.Equal(t, http.StatusOK, code)
		require.Empty(t, body)
		events, jobs := tb.rowCounts(t)
		require.Equal(t, 1, events)
		require.Equal(t, 1, jobs)
		st := tb.status(t)
		require.EqualValues(t, 1, st.Events.Received)
		require.EqualValues(t, 1, st.Events.ByType[wecom.KindAddExternalContact])
		require.EqualValues(t, 1, st.Queue.Pending)
	})

	t.Run("DuplicateAnswers200WithoutSecondJob", func(t *testing.T) {
		t.Parallel()
		// Ensure WeCom's retry (same event, fresh ciphertext and nonce) is acknowledged but stored once.
		tb := setup(t, setupOpts{})
		for range 3 {
			code, _ := tb.postEvent(t, addEvent(testDealerCorp, "wmtest0002"), testCorpID)
			require.Equal(t, http.StatusOK, code)
		}
		events, jobs := tb.rowCounts(t)
		require.Equal(t, 1, events)
		require.Equal(t, 1, jobs)
		st := tb.status(t)
		require.EqualValues(t, 1, st.Events.Received)
		require.EqualValues(t, 2, st.Events.Duplicate)
	})

	t.Run("SameSecondDifferentCustomersAreDistinct", func(t *testing.T) {
		t.Parallel()
		// Ensure two adds in the same second (FromUserName+CreateTime would collide) are both kept.
		tb := setup(t, setupOpts{})
		for _, id := range []string{"wmtestA", "wmtestB"} {
			code, _ := tb.postEvent(t, addEvent(testDealerCorp, id), testCorpID)
			require.Equal(t, http.StatusOK, code)
		}
		events, _ := tb.rowCounts(t)
		require.Equal(t, 2, events)
	})

	t.Run("EveryKindIsStored", func(t *testing.T) {
		t.Parallel()
		// Ensure each change type and both MemChangeList formats are classified.
		tb := setup(t, setupOpts{})
		base := addEvent(testDealerCorp, "wmtestK")
		evs := []wecom.Event{base}
		for _, ct := range []string{wecom.ChangeAddHalfExternalContact, wecom.ChangeDelExternalContact,
			wecom.ChangeDelFollowUser, wecom.ChangeEditExternalContact, wecom.ChangeTransferFail} {
			ev := base
			ev.ChangeType = ct
			evs = append(evs, ev)
		}
		chat := wecom.Event{ToUserName: testDealerCorp, FromUserName: "sys", CreateTime: 1700000001, MsgType: "event",
			Event: wecom.EventChangeExternalChat, ChatID: "wrtestchat", ChangeType: wecom.ChatChangeUpdate,
			UpdateDetail: wecom.ChatAddMember, MemChangeCnt: "2", MemChangeList: wecom.MemList{"wmtestM1", "wmtestM2"}, CurMemVer: "v2"}
		evs = append(evs, chat)
		for _, ev := range evs {
			code, _ := tb.postEvent(t, ev, testCorpID)
			require.Equal(t, http.StatusOK, code, ev.ChangeType)
		}
		// The old comma-separated MemChangeList format, as raw XML.
		old := `<xml><ToUserName><![CDATA[` + testDealerCorp + `]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700000002</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wrtestchat]]></ChatId><ChangeType><![CDATA[update]]></ChangeType><UpdateDetail><![CDATA[del_member]]></UpdateDetail><QuitScene>0</QuitScene><MemChangeCnt>2</MemChangeCnt><MemChangeList><![CDATA[wmtestM1,wmtestM2]]></MemChangeList><CurMemVer>v3</CurMemVer></xml>`
		u, body := tb.seal(t, []byte(old), testCorpID)
		code, _ := tb.post(t, u, body)
		require.Equal(t, http.StatusOK, code)

		st := tb.status(t)
		require.EqualValues(t, 8, st.Events.Received)
		for _, k := range []string{wecom.KindAddExternalContact, wecom.KindAddHalfExternalContact, wecom.KindDelExternalContact,
			wecom.KindDelFollowUser, wecom.KindEditExternalContact, wecom.KindTransferFail, wecom.KindChatAddMember, wecom.KindChatDelMember} {
			require.EqualValues(t, 1, st.Events.ByType[k], k)
		}
		var members string
		require.NoError(t, tb.db.SQL().QueryRow(`SELECT members FROM events WHERE kind = 'del_member'`).Scan(&members))
		require.Contains(t, members, "wmtestM1")
		require.Contains(t, members, "wmtestM2")
	})

	t.Run("UnknownAndUnparsableAreIgnoredNot5xx", func(t *testing.T) {
		t.Parallel()
		// Ensure authentic events we cannot act on get 200 and are kept with their plaintext.
		tb := setup(t, setupOpts{})
		future := addEvent(testDealerCorp, "wmtestF")
		future.ChangeType = "some_future_change"
		code, _ := tb.postEvent(t, future, testCorpID)
		require.Equal(t, http.StatusOK, code)
		garbage := []byte("<xml><ToUserName>unterminated")
		u, body := tb.seal(t, garbage, testCorpID)
		code, _ = tb.post(t, u, body)
		require.Equal(t, http.StatusOK, code)

		st := tb.status(t)
		require.EqualValues(t, 2, st.Events.Ignored)
		require.EqualValues(t, 2, st.Events.ByType[wecom.KindIgnored])
		var raw []byte
		require.NoError(t, tb.db.SQL().QueryRow(`SELECT raw FROM events WHERE dedup_key LIKE 'raw|%' AND raw = ?`, garbage).Scan(&raw))
		require.Equal(t, garbage, raw)
		_, jobs := tb.rowCounts(t)
		require.Zero(t, jobs, "ignored events create no job")
	})

	t.Run("DownstreamReceiveIDOnAllowlist", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, setupOpts{})
		code, _ := tb.postEvent(t, addEvent(testDealerCorp, "wmtestD"), testDealerCorp)
		require.Equal(t, http.StatusOK, code)
	})

	t.Run("ReceiveIDOffAcceptsAnyCorp", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, setupOpts{mode: handlers.ReceiveIDOff})
		code, _ := tb.postEvent(t, addEvent(testDealerCorp, "wmtestO"), "wwtestunknown")
		require.Equal(t, http.StatusOK, code)
	})
}

func TestCallback_LargeAuthenticEventsAreStored(t *testing.T) {
	t.Parallel()
	// Ensure the largest events WeCom sends validate: a WeCom 503 only leads
	// to retries that fail the same way, and then the event is lost.
	tb := setup(t, setupOpts{})
	members := make(wecom.MemList, 500)
	for i := range members {
		members[i] = fmt.Sprintf("wm%030d", i) // real external_userids are 32 characters
	}
	chat := wecom.Event{ToUserName: testDealerCorp, FromUserName: "sys", CreateTime: 1700000001, MsgType: "event",
		Event: wecom.EventChangeExternalChat, ChatID: "wrtestbigchat", ChangeType: wecom.ChatChangeUpdate,
		UpdateDetail: wecom.ChatAddMember, MemChangeCnt: "500", MemChangeList: members, CurMemVer: "v2"}
	code, body := tb.postEvent(t, chat, testCorpID)
	require.Equal(t, http.StatusOK, code, body)
	var stored string
	require.NoError(t, tb.db.SQL().QueryRow(`SELECT members FROM events WHERE chat_id = 'wrtestbigchat'`).Scan(&stored))
	var got []string
	require.NoError(t, json.Unmarshal([]byte(stored), &got))
	require.Equal(t, []string(members), got, "every member is kept")

	long := addEvent(testDealerCorp, "wmtestL")
	long.UserID = strings.Repeat("u", 4096) // any field, however long, is part of an authentic event
	code, body = tb.postEvent(t, long, testCorpID)
	require.Equal(t, http.StatusOK, code, body)
	events, _ := tb.rowCounts(t)
	require.Equal(t, 2, events)
}

func TestCallback_BodyCap(t *testing.T) {
	t.Parallel()
	// Ensure a body over the cap is refused with 413 whether or not it
	// announces its length, and one just within it is read.
	tb := setup(t, setupOpts{})
	msg, err := addEvent(testDealerCorp, "wmtestCap").Marshal()
	require.NoError(t, err)
	u, body := tb.seal(t, msg, testCorpID)
	pad := func(n int) []byte { return append(bytes.Clone(body), bytes.Repeat([]byte(" "), n-len(body))...) }
	require.EqualValues(t, 256<<10, handlers.DefaultBodyLimit)

	for name, send := range map[string]func(b []byte) *http.Request{
		"ContentLength": func(b []byte) *http.Request { return httptest.NewRequest(http.MethodPost, u, bytes.NewReader(b)) },
		"Chunked": func(b []byte) *http.Request {
			return httptest.NewRequest(http.MethodPost, u, io.MultiReader(bytes.NewReader(b))) // length unknown
		},
	} {
		rec := httptest.NewRecorder()
		tb.handler.ServeHTTP(rec, send(pad(handlers.DefaultBodyLimit+1)))
		require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code, name)
		rec = httptest.NewRecorder()
		tb.handler.ServeHTTP(rec, send(pad(handlers.DefaultBodyLimit)))
		require.Equal(t, http.StatusOK, rec.Code, name)
	}
	require.EqualValues(t, 2, tb.status(t).Callbacks.Rejected[handlers.ReasonTooLarge])

	_, err = handlers.New(handlers.Config{Store: tb.db, Crypt: tb.crypt, ReceiveIDs: tb.policy, AdminToken: testAdminToken,
		BodyLimit: store.MaxRawLen * 2})
	require.ErrorContains(t, err, "BodyLimit", "a cap whose plaintext the store would refuse is a configuration error")
}

func TestCallback_ConcurrencyBound(t *testing.T) {
	t.Parallel()
	// Ensure at most CallbackConcurrency bodies are read at once: one more is
	// answered 503 with Retry-After at once, not queued, and the slots free
	// up when the held requests finish.
	const n = 3
	tb := setup(t, setupOpts{concurrency: n})
	type held struct {
		w    *io.PipeWriter
		body []byte
		rec  *httptest.ResponseRecorder
		done chan struct{}
	}
	var hs []held
	for i := range n {
		msg, err := addEvent(testDealerCorp, "wmtestSlow"+strconv.Itoa(i)).Marshal()
		require.NoError(t, err)
		u, body := tb.seal(t, msg, testCorpID)
		pr, pw := io.Pipe()
		h := held{w: pw, body: body, rec: httptest.NewRecorder(), done: make(chan struct{})}
		go func() {
			defer close(h.done)
			tb.handler.ServeHTTP(h.rec, httptest.NewRequest(http.MethodPost, u, pr))
		}()
		// io.Pipe's Write returns once the handler has read the bytes, so
		// the handler holds its slot from here on.
		_, err = pw.Write(body[:5])
		require.NoError(t, err)
		hs = append(hs, h)
	}

	msg, err := addEvent(testDealerCorp, "wmtestOver").Marshal()
	require.NoError(t, err)
	u, body := tb.seal(t, msg, testCorpID)
	rec := httptest.NewRecorder()
	tb.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, u, bytes.NewReader(body)))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.NotEmpty(t, rec.Header().Get("Retry-After"))
	require.EqualValues(t, 1, tb.status(t).Callbacks.Rejected[handlers.ReasonBusy])

	for _, h := range hs {
		_, err := h.w.Write(h.body[5:])
		require.NoError(t, err)
		require.NoError(t, h.w.Close())
		<-h.done
		require.Equal(t, http.StatusOK, h.rec.Code, h.rec.Body.String())
	}
	rec = httptest.NewRecorder()
	tb.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, u, bytes.NewReader(body)))
	require.Equal(t, http.StatusOK, rec.Code, "slots are released")
	events, _ := tb.rowCounts(t)
	require.Equal(t, n+1, events)
}

// TestCallback_Rejections drives every rejection path and checks that each
// answers its status, counts its reason and writes nothing.
func TestCallback_Rejections(t *testing.T) {
	t.Parallel()
	valid := func(t *testing.T, tb *testBundle) (string, []byte) {
		msg, err := addEvent(testDealerCorp, "wmtestR").Marshal()
		require.NoError(t, err)
		return tb.seal(t, msg, testCorpID)
	}
	// withQuery builds a valid callback whose query parameter key is set to
	// val ("": removed).
	withQuery := func(key, val string) func(t *testing.T, tb *testBundle) (string, []byte) {
		return func(t *testing.T, tb *testBundle) (string, []byte) {
			u, b := valid(t, tb)
			pu, err := url.Parse(u)
			require.NoError(t, err)
			q := pu.Query()
			if val == "" {
				q.Del(key)
			} else {
				q.Set(key, val)
			}
			pu.RawQuery = q.Encode()
			return pu.String(), b
		}
	}
	cases := []struct {
		name   string
		opts   setupOpts
		build  func(t *testing.T, tb *testBundle) (string, []byte)
		status int
		reason string
	}{
		{"ErrMissingSignature", setupOpts{}, withQuery("msg_signature", ""), http.StatusUnauthorized, handlers.ReasonSignature},
		{"ErrInvalidSignature", setupOpts{}, withQuery("msg_signature", strings.Repeat("0", 40)), http.StatusUnauthorized, handlers.ReasonSignature},
		{"ErrTamperedTimestamp", setupOpts{}, withQuery("timestamp", "1700000001"), http.StatusUnauthorized, handlers.ReasonSignature},
		{"ErrTamperedCiphertext", setupOpts{}, func(t *testing.T, tb *testBundle) (string, []byte) {
			u, b := valid(t, tb)
			i := bytes.Index(b, []byte("CDATA[")) + len("CDATA[")
			i = bytes.Index(b[i:], []byte("CDATA[")) + i + len("CDATA[")
			b = bytes.Clone(b)
			if b[i] == 'A' {
				b[i] = 'B'
			} else {
				b[i] = 'A'
			}
			return u, b
		}, http.StatusUnauthorized, handlers.ReasonSignature},
		{"ErrMalformedEnvelope", setupOpts{}, func(t *testing.T, tb *testBundle) (string, []byte) {
			u, _ := valid(t, tb)
			return u, []byte(`{"tousername":"x","encrypt":"y"}`)
		}, http.StatusBadRequest, handlers.ReasonDecrypt},
		{"ErrUndecryptable", setupOpts{}, func(t *testing.T, tb *testBundle) (string, []byte) {
			// Correctly signed, but the ciphertext is not a whole number of blocks.
			enc := "c2hvcnQ="
			ts, nonce := strconv.FormatInt(tb.now.Unix(), 10), "42"
			q := url.Values{"msg_signature": {tb.crypt.Signature(ts, nonce, enc)}, "timestamp": {ts}, "nonce": {nonce}}
			return tb.srv.URL + handlers.DefaultCallbackPath + "?" + q.Encode(),
				[]byte("<xml><ToUserName><![CDATA[x]]></ToUserName><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>")
		}, http.StatusBadRequest, handlers.ReasonDecrypt},
		{"ErrReceiveIDNotAllowed", setupOpts{}, func(t *testing.T, tb *testBundle) (string, []byte) {
			msg, err := addEvent(testDealerCorp, "wmtestR").Marshal()
			require.NoError(t, err)
			return tb.seal(t, msg, "wwteststranger")
		}, http.StatusForbidden, handlers.ReasonReceiveID},
		{"ErrStrictRejectsDownstream", setupOpts{mode: handlers.ReceiveIDStrict}, func(t *testing.T, tb *testBundle) (string, []byte) {
			msg, err := addEvent(testDealerCorp, "wmtestR").Marshal()
			require.NoError(t, err)
			return tb.seal(t, msg, testDealerCorp)
		}, http.StatusForbidden, handlers.ReasonReceiveID},
		{"ErrTooLarge", setupOpts{}, func(t *testing.T, tb *testBundle) (string, []byte) {
			u, b := valid(t, tb)
			return u, append(b, bytes.Repeat([]byte(" "), handlers.DefaultBodyLimit)...)
		}, http.StatusRequestEntityTooLarge, handlers.ReasonTooLarge},
		{"ErrStale", setupOpts{maxAge: time.Hour}, func(t *testing.T, tb *testBundle) (string, []byte) {
			msg, err := addEvent(testDealerCorp, "wmtestR").Marshal()
			require.NoError(t, err)
			tb.now = tb.now.Add(-2 * time.Hour) // sealed two hours before the server's now
			u, b := tb.seal(t, msg, testCorpID)
			tb.now = tb.now.Add(2 * time.Hour)
			return u, b
		}, http.StatusUnauthorized, handlers.ReasonStale},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tb := setup(t, tc.opts)
			u, body := tc.build(t, tb)
			code, respBody := tb.post(t, u, body)
			require.Equal(t, tc.status, code, respBody)
			events, jobs := tb.rowCounts(t)
			require.Zero(t, events, "a rejection writes nothing")
			require.Zero(t, jobs, "a rejection writes nothing")
			st := tb.status(t)
			for _, r := range []string{handlers.ReasonSignature, handlers.ReasonDecrypt, handlers.ReasonReceiveID, handlers.ReasonTooLarge, handlers.ReasonStale} {
				want := int64(0)
				if r == tc.reason {
					want = 1
				}
				require.Equal(t, want, st.Callbacks.Rejected[r], "reason %s", r)
			}
		})
	}
}

func TestCallback_VerifyURLRejections(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOpts{maxAge: time.Hour})
	enc, err := tb.crypt.Encrypt([]byte("1234567890"), testCorpID, nil)
	require.NoError(t, err)
	ts := strconv.FormatInt(tb.now.Unix(), 10)

	get := func(q url.Values) (int, string) {
		resp, err := tb.client.Get(tb.srv.URL + handlers.DefaultCallbackPath + "?" + q.Encode())
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get(url.Values{"msg_signature": {tb.crypt.Signature(ts, "7", enc)}, "timestamp": {ts}, "nonce": {"7"}, "echostr": {enc}})
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "1234567890", body)

	code, _ = get(url.Values{"msg_signature": {strings.Repeat("a", 40)}, "timestamp": {ts}, "nonce": {"7"}, "echostr": {enc}})
	require.Equal(t, http.StatusUnauthorized, code)
	require.EqualValues(t, 1, tb.status(t).Callbacks.Rejected[handlers.ReasonSignature])
}

// storeFunc is a Store whose methods are set per test.
type storeFunc struct {
	SaveEventFunc func(ctx context.Context, ev *store.Event) (bool, error)
	StatusFunc    func(ctx context.Context) (store.Status, error)
	PingFunc      func(ctx context.Context) error
}

var _ handlers.Store = (*storeFunc)(nil)

func (s *storeFunc) SaveEvent(ctx context.Context, ev *store.Event) (bool, error) {
	return s.SaveEventFunc(ctx, ev)
}
func (s *storeFunc) Status(ctx context.Context) (store.Status, error) { return s.StatusFunc(ctx) }
func (s *storeFunc) Ping(ctx context.Context) error                   { return s.PingFunc(ctx) }

func TestCallback_StoreFailure(t *testing.T) {
	t.Parallel()
	// Ensure an authentic event the store cannot commit gets a 503, so WeCom retries it.
	failing := &storeFunc{
		SaveEventFunc: func(context.Context, *store.Event) (bool, error) {
			return false, errors.New("disk I/O error")
		},
		StatusFunc: func(context.Context) (store.Status, error) { return store.Status{}, nil },
		PingFunc:   func(context.Context) error { return errors.New("disk I/O error") },
	}
	tb := setup(t, setupOpts{store: failing})
	code, body := tb.postEvent(t, addEvent(testDealerCorp, "wmtestS"), testCorpID)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.NotContains(t, body, "disk", "causes stay out of responses")

	resp, err := tb.client.Get(tb.srv.URL + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

func TestServer_Admin(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOpts{})
	for name, header := range map[string]string{
		"ErrMissingToken": "",
		"ErrWrongToken":   "Bearer wrong-token",
		"ErrNotBearer":    "Basic " + testAdminToken,
	} {
		t.Run(name, func(t *testing.T) {
			resp := tb.getStatus(t, header)
			resp.Body.Close()
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		})
	}
	t.Run("StatusKeysAreAContract", func(t *testing.T) {
		resp := tb.getStatus(t, "Bearer "+testAdminToken)
		defer resp.Body.Close()
		var m map[string]map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		for _, k := range []string{"events.received", "events.duplicate", "events.ignored", "events.by_type", "callbacks.rejected", "queue.pending"} {
			group, key, _ := strings.Cut(k, ".")
			require.Contains(t, m[group], key, k)
		}
		rejected := m["callbacks"]["rejected"].(map[string]any)
		for _, r := range []string{"signature", "decrypt", "receive_id", "too_large", "stale"} {
			require.Contains(t, rejected, r)
		}
	})
	t.Run("HealthAndReady", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz"} {
			resp, err := tb.client.Get(tb.srv.URL + p)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode, p)
		}
	})
	t.Run("Metrics", func(t *testing.T) {
		resp, err := tb.client.Get(tb.srv.URL + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Contains(t, string(b), `pendinglink_callbacks_rejected_total{reason="signature"}`)
	})
}

// TestCallback_LoggedRemoteIsThePeer: the "remote" of a rejected callback
// is the address that connected, not one an unauthenticated caller writes
// in X-Forwarded-For or X-Real-IP; with TrustedProxies it is the nearest
// address in X-Forwarded-For that is not a trusted proxy's.
func TestCallback_LoggedRemoteIsThePeer(t *testing.T) {
	t.Parallel()
	const forged, client = "203.0.113.66", "198.51.100.7"
	rejected := func(t *testing.T, tb *testBundle, logs *syncbuf.Buffer) map[string]any {
		t.Helper()
		u, body := tb.seal(t, []byte("<xml/>"), testCorpID)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, strings.Replace(u, "msg_signature=", "msg_signature=0", 1), bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("X-Forwarded-For", forged+", "+client)
		req.Header.Set("X-Real-IP", forged)
		resp, err := tb.client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		var line map[string]any
		require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(logs.String())), &line), logs.String())
		require.Equal(t, "callback rejected", line["msg"])
		require.NotContains(t, logs.String(), forged)
		return line
	}
	t.Run("Direct", func(t *testing.T) {
		t.Parallel()
		logs := &syncbuf.Buffer{}
		tb := setup(t, setupOpts{logger: slog.New(slog.NewJSONHandler(logs, nil))})
		line := rejected(t, tb, logs)
		require.Equal(t, "127.0.0.1", line["remote"])
	})
	t.Run("BehindATrustedProxy", func(t *testing.T) {
		t.Parallel()
		_, loopback, err := net.ParseCIDR("127.0.0.0/8")
		require.NoError(t, err)
		logs := &syncbuf.Buffer{}
		tb := setup(t, setupOpts{logger: slog.New(slog.NewJSONHandler(logs, nil)), trustedProxies: []*net.IPNet{loopback}})
		line := rejected(t, tb, logs)
		require.Equal(t, client, line["remote"], "the proxy's own entry, not the caller's")
	})
}

// TestNew_CallbackPathTakenByARoute: a callback path that is one of the
// server's own routes would be shadowed (WeCom's URL check would get the
// login page, "ok" or metrics), so New refuses it.
func TestNew_CallbackPathTakenByARoute(t *testing.T) {
	t.Parallel()
	db := storetest.MustOpen(t, store.Config{Jobs: pipeline.Policy{}})
	for _, path := range []string{"/", "/healthz", "/readyz", "/metrics"} {
		cfg := testConfig(t, db, handlers.ReceiveIDAllowlist, prometheus.NewRegistry())
		cfg.CallbackPath = path
		_, err := handlers.New(cfg)
		require.ErrorContains(t, err, "is a route of the server", path)
	}
	// Under the server's own trees a callback path would take one of their
	// paths (GET /v1/fans/x is fan x), and echo reads ':' and '*' as a
	// parameter and a wildcard: "/*" would answer every unknown path.
	for _, path := range []string{"/v1/status", handlers.OpenAPIPath, "/v1", "/v1/", "/v1/fans/x", "/v1/callback", "/ui", "/ui/callback", handlers.JobsUIPrefix, handlers.JobsUIPrefix + "/cb", "/wecom/:corp", "/*"} {
		cfg := testConfig(t, db, handlers.ReceiveIDAllowlist, prometheus.NewRegistry())
		cfg.CallbackPath = path
		_, err := handlers.New(cfg)
		require.ErrorContains(t, err, "Config.CallbackPath", path)
		require.Error(t, handlers.CheckCallbackPath(path), path)
	}
	require.NoError(t, handlers.CheckCallbackPath(handlers.DefaultCallbackPath))
	for _, path := range []string{"/v1x", "/uicallback", handlers.JobsUIPrefix + "-callback", "/wecom/v1/callback"} {
		cfg := testConfig(t, db, handlers.ReceiveIDAllowlist, prometheus.NewRegistry())
		cfg.CallbackPath = path
		_, err := handlers.New(cfg)
		require.NoError(t, err, "%s shadows nothing", path)
	}
	cfg := testConfig(t, db, handlers.ReceiveIDAllowlist, prometheus.NewRegistry())
	cfg.CallbackPath = "/wecom/dealer-callback"
	_, err := handlers.New(cfg)
	require.NoError(t, err)
}

func TestNew_MissingDependencies(t *testing.T) {
	t.Parallel()
	_, err := handlers.New(handlers.Config{})
	require.ErrorContains(t, err, "Config.Store is required")
}
