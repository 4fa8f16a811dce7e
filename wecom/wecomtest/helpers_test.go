package wecomtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// These helpers talk raw HTTP, so the fake's tests don't depend on the
// wecom client being right.

// t0 is 2025-01-01 00:00 in China time (UTC+8), a window boundary for every quota.
var t0 = time.Date(2024, 12, 31, 16, 0, 0, 0, time.UTC)

type common struct {
	Errcode int    `json:"errcode"`
	Errmsg  string `json:"errmsg"`
}

type tokenResp struct {
	common
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
}

type pendingResp struct {
	common
	PendingID string `json:"pending_id"`
}

type batchResp struct {
	common
	Result []struct {
		ExternalUserID string `json:"external_userid"`
		PendingID      string `json:"pending_id"`
	} `json:"result"`
}

// pendingIDs turns a batch answer into external_userid → pending_id.
func (b batchResp) pendingIDs() map[string]string {
	m := map[string]string{}
	for _, r := range b.Result {
		m[r.ExternalUserID] = r.PendingID
	}
	return m
}

type externalResp struct {
	common
	Info []struct {
		CorpID         string `json:"corpid"`
		ExternalUserID string `json:"external_userid"`
	} `json:"external_userid_info"`
}

type groupChatResp struct {
	common
	GroupChat struct {
		ChatID     string `json:"chat_id"`
		Owner      string `json:"owner"`
		CreateTime int64  `json:"create_time"`
		MemberList []struct {
			UserID    string `json:"userid"`
			Type      int    `json:"type"`
			JoinTime  int64  `json:"join_time"`
			JoinScene int    `json:"join_scene"`
		} `json:"member_list"`
	} `json:"group_chat"`
}

// member is one entry of a groupchat/get member_list, without join_scene.
type member struct {
	UserID   string
	Type     int
	JoinTime int64
}

// members returns the member_list in order.
func (r groupChatResp) members() []member {
	out := make([]member, 0, len(r.GroupChat.MemberList))
	for _, m := range r.GroupChat.MemberList {
		out = append(out, member{m.UserID, m.Type, m.JoinTime})
	}
	return out
}

// groupChat calls externalcontact/groupchat/get.
func groupChat(t *testing.T, srv *wecomtest.Server, tok, chatID string) groupChatResp {
	t.Helper()
	return post[groupChatResp](t, srv, wecomtest.APIGroupChatGet, tok, map[string]any{"chat_id": chatID, "need_name": 0})
}

type shareResp struct {
	common
	Ending     int    `json:"ending"`
	NextCursor string `json:"next_cursor"`
	CorpList   []struct {
		CorpID   string `json:"corpid"`
		CorpName string `json:"corp_name"`
		AgentID  int64  `json:"agentid"`
	} `json:"corp_list"`
}

// testBundle is what most tests need: a started fake on a fixed clock.
type testBundle struct {
	srv   *wecomtest.Server
	clock *wecomtest.Clock
}

func setup(t *testing.T, opts ...wecomtest.Option) testBundle {
	t.Helper()
	clock := wecomtest.NewClock(t0)
	srv := wecomtest.NewServer(append([]wecomtest.Option{wecomtest.WithClock(clock)}, opts...)...)
	t.Cleanup(srv.Close)
	return testBundle{srv: srv, clock: clock}
}

// waitCtx bounds a wait, so that a broken signal fails the test instead of
// hanging it until the global test timeout.
func waitCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// do sends one request and decodes the JSON answer into out. It fails the
// test on a transport error or a non-200 status.
func do(t *testing.T, srv *wecomtest.Server, method, api string, query url.Values, body any, out any) {
	t.Helper()
	resp := send(t, srv, method, api, query, body)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", b)
	require.Equal(t, "application/json; charset=UTF-8", resp.Header.Get("Content-Type"))
	require.NoError(t, json.Unmarshal(b, out), "body: %s", b)
}

// send sends one request and returns the response; the transport must succeed.
func send(t *testing.T, srv *wecomtest.Server, method, api string, query url.Values, body any) *http.Response {
	t.Helper()
	resp, err := trySend(srv, method, api, query, body)
	require.NoError(t, err)
	return resp
}

func trySend(srv *wecomtest.Server, method, api string, query url.Values, body any) (*http.Response, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = bytes.NewBufferString(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(j)
	}
	u := srv.URL + wecomtest.PathPrefix + api
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		return nil, err
	}
	return srv.HTTPClient().Do(req)
}

func decodeJSON(resp *http.Response, out any) error {
	return json.NewDecoder(resp.Body).Decode(out)
}

// post calls a POST API with the given token and returns the answer.
func post[T any](t *testing.T, srv *wecomtest.Server, api, token string, body any) T {
	t.Helper()
	var out T
	do(t, srv, http.MethodPost, api, url.Values{"access_token": {token}}, body, &out)
	return out
}

func getToken(t *testing.T, srv *wecomtest.Server, corpID, secret string) tokenResp {
	t.Helper()
	var out tokenResp
	do(t, srv, http.MethodGet, wecomtest.APIGetToken, url.Values{"corpid": {corpID}, "corpsecret": {secret}}, nil, &out)
	return out
}

// mustToken returns a fresh upstream token.
func mustToken(t *testing.T, srv *wecomtest.Server) string {
	t.Helper()
	r := getToken(t, srv, srv.CorpID, srv.CorpSecret)
	require.Equal(t, 0, r.Errcode, r.Errmsg)
	return r.AccessToken
}

// mustDownstreamToken returns a fresh token for dealer d.
func mustDownstreamToken(t *testing.T, srv *wecomtest.Server, d wecomtest.Dealer) string {
	t.Helper()
	r := post[tokenResp](t, srv, wecomtest.APIDownstreamGetToken, mustToken(t, srv),
		map[string]any{"corpid": d.CorpID, "business_type": 1, "agentid": d.AgentID})
	require.Equal(t, 0, r.Errcode, r.Errmsg)
	return r.AccessToken
}

// register calls unionid_to_pending_id for p and returns the answer.
func register(t *testing.T, srv *wecomtest.Server, tok string, p wecomtest.Person) pendingResp {
	t.Helper()
	return post[pendingResp](t, srv, wecomtest.APIUnionIDToPendingID, tok,
		map[string]string{"unionid": p.UnionID, "openid": p.OpenID})
}

// mustRegister registers p and returns the pending_id.
func mustRegister(t *testing.T, srv *wecomtest.Server, tok string, p wecomtest.Person) string {
	t.Helper()
	r := register(t, srv, tok, p)
	require.Equal(t, 0, r.Errcode, r.Errmsg)
	require.NotEmpty(t, r.PendingID)
	return r.PendingID
}

// batch calls batch/external_userid_to_pending_id.
func batch(t *testing.T, srv *wecomtest.Server, tok, chatID string, ids ...string) batchResp {
	t.Helper()
	body := map[string]any{"external_userid": ids}
	if chatID != "" {
		body["chat_id"] = chatID
	}
	return post[batchResp](t, srv, wecomtest.APIExternalUserIDToPendingID, tok, body)
}

// mustBatch calls batch and requires success.
func mustBatch(t *testing.T, srv *wecomtest.Server, tok, chatID string, ids ...string) map[string]string {
	t.Helper()
	r := batch(t, srv, tok, chatID, ids...)
	require.Equal(t, 0, r.Errcode, r.Errmsg)
	return r.pendingIDs()
}

// scene is the world most batch tests start from: an upstream token and one
// person who is a customer of one dealer, not yet registered.
type scene struct {
	testBundle
	tok string
	d   wecomtest.Dealer
	p   wecomtest.Person
	c   wecomtest.Customer
}

func setupScene(t *testing.T, opts ...wecomtest.Option) scene {
	t.Helper()
	s := scene{testBundle: setup(t, opts...)}
	s.tok = mustToken(t, s.srv)
	s.d = s.srv.AddDealer("Dealer A")
	s.p = s.srv.AddPerson()
	s.c = s.srv.AddCustomer(s.d, s.p, s.d.Staff[0])
	return s
}

// twoDealerScene is a registered person who is a customer of two dealers.
type twoDealerScene struct {
	testBundle
	tok    string
	d1, d2 wecomtest.Dealer
	p      wecomtest.Person
	pid    string
	c1, c2 wecomtest.Customer
}

func setupTwoDealers(t *testing.T, opts ...wecomtest.Option) twoDealerScene {
	t.Helper()
	s := twoDealerScene{testBundle: setup(t, opts...)}
	s.tok = mustToken(t, s.srv)
	s.d1, s.d2 = s.srv.AddDealer("Dealer A"), s.srv.AddDealer("Dealer B")
	s.p = s.srv.AddPerson()
	s.pid = mustRegister(t, s.srv, s.tok, s.p)
	s.c1 = s.srv.AddCustomer(s.d1, s.p, s.d1.Staff[0])
	s.c2 = s.srv.AddCustomer(s.d2, s.p, s.d2.Staff[0])
	return s
}
