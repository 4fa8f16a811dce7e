package wecomtest

import (
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pendinglink/pendinglink/wecom"
)

// Names of the APIs the fake serves: the path after /cgi-bin/. They are the
// keys of Stats, the argument of Calls and FailNext, and Faults.APIs.
const (
	APIGetToken                  = "gettoken"                                      // GET, §4.1
	APIDownstreamGetToken        = "corpgroup/corp/gettoken"                       // POST, §4.2
	APIListAppShareInfo          = "corpgroup/corp/list_app_share_info"            // POST, §4.3
	APIUnionIDToPendingID        = "corpgroup/unionid_to_pending_id"               // POST, §4.4
	APIExternalUserIDToPendingID = "corpgroup/batch/external_userid_to_pending_id" // POST, §4.5
	APIUnionIDToExternalUserID   = "corpgroup/unionid_to_external_userid"          // POST, §4.6
	APIGroupChatGet              = "externalcontact/groupchat/get"                 // POST, doc 92122
)

// PathPrefix is where the APIs live under Server.URL, as on qyapi.weixin.qq.com.
const PathPrefix = "/cgi-bin/"

// PendingIDLifetime is how long a pending_id stays valid (§4.4).
const PendingIDLifetime = 90 * 24 * time.Hour

// tokenExpiresIn is the lifetime WeCom announces for every token.
const tokenExpiresIn = 7200 * time.Second

// maxBody caps request bodies; WeCom's own limit is unknown, real requests are tiny.
const maxBody = 1 << 20

// Server is a fake WeCom upstream corp with its shared app and a world of
// dealers, people, customers and group chats. It serves the APIs pendinglink
// calls over real HTTP, counts every call, injects faults on request, and
// sends encrypted callbacks through a Sender.
//
// Fields may be set between NewUnstartedServer and Start; after Start they
// must not change (use SetFaults and the Clock for anything dynamic).
type Server struct {
	// URL is the base URL, http://127.0.0.1:port with no trailing slash, set
	// by Start. The APIs are under URL + PathPrefix.
	URL string

	// Listener, when set before Start, is used instead of a fresh
	// 127.0.0.1:0 listener, e.g. to keep the demo on a fixed address.
	Listener net.Listener

	// CorpID is the upstream (brand) corp. Defaults to "wwtestupstream0001".
	CorpID string
	// AgentID is the shared app's id in the upstream corp. Defaults to 1000002.
	AgentID int64
	// CorpSecret is the shared app's secret. Defaults to a random "testsecret-…".
	CorpSecret string

	// Clock is the fake's notion of time. Defaults to a clock stopped at the
	// real time of NewUnstartedServer.
	Clock *Clock

	// PendingQuota limits corpgroup/unionid_to_pending_id. A zero field takes
	// the documented limit (100,000/hour, 480,000/day, 7,500,000/month).
	PendingQuota Quota
	// ExternalQuota limits corpgroup/unionid_to_external_userid. A zero field
	// takes the documented limit (20,000/hour, 240,000/day, no monthly limit).
	ExternalQuota Quota

	// PendingForUnregistered answers the open question §9 #17. When false
	// (the default), batch/external_userid_to_pending_id returns a pending_id
	// only for people registered through unionid_to_pending_id whose id is
	// still live. When true it returns one for anybody, issuing it on the
	// spot; a later registration returns that same id.
	//
	// It applies to PendingWhenRegistered only: under PendingRegisteredFirst
	// an id issued during the lookup was issued after the relationship
	// began, so it could never be answered, and the field is ignored.
	PendingForUnregistered bool

	// PendingReissue answers the open question §9 #10. When false (the
	// default), unionid_to_pending_id gives a person's live pending_id
	// back until it expires, and issues a new one only then. When true,
	// every call issues a new id; lookups answer the newest.
	PendingReissue bool

	// PendingModel is when batch/external_userid_to_pending_id maps an
	// external_userid to its person's live pending_id, another open
	// question: whenever the person is registered at lookup time
	// (PendingWhenRegistered, the default), or only when they were
	// registered before the relationship looked up began
	// (PendingRegisteredFirst).
	PendingModel PendingModel

	// tag makes this server's ids differ from another server's, so that a
	// Dealer or Person handed to the wrong server is caught.
	tag string

	ts        *httptest.Server
	closing   chan struct{} // closed when Close starts
	closeOnce sync.Once

	mu      sync.Mutex // guards the world, tokens and quotas
	w       world
	tokens  map[string]token
	pquota  quotaCounter
	equota  quotaCounter
	ntokens int

	faultMu sync.Mutex
	faults  Faults
	rng     *rand.Rand
	script  map[string][]Fault

	statsMu sync.Mutex
	stats   Stats
	changed chan struct{} // closed and replaced on every stats change

	closeMu    sync.Mutex // guards sendClosed, senders and clients
	sendClosed bool
	sendWG     sync.WaitGroup
	senders    []*Sender
	clients    []*wecom.Client // made by Client, closed by Close
}

// PendingModel says which registrations batch/external_userid_to_pending_id
// honours; see Server.PendingModel.
type PendingModel int

const (
	// PendingWhenRegistered answers the person's live pending_id whenever
	// they hold one at lookup time, however late they were registered.
	PendingWhenRegistered PendingModel = iota
	// PendingRegisteredFirst answers the live pending_id only if it was
	// issued at or before the relationship looked up began: for a lookup
	// without chat_id, the start of the earliest follow of the person by
	// the dealer's staff that is still active (a transfer keeps it, see
	// TransferCustomer); with chat_id, when the person joined that chat. A
	// person registered after the add is found again only once the
	// relationship ends and begins anew.
	PendingRegisteredFirst
)

// String returns the model's name, e.g. "PendingRegisteredFirst".
func (m PendingModel) String() string {
	switch m {
	case PendingWhenRegistered:
		return "PendingWhenRegistered"
	case PendingRegisteredFirst:
		return "PendingRegisteredFirst"
	}
	return "PendingModel(" + strconv.Itoa(int(m)) + ")"
}

// Option configures a Server in NewServer or NewUnstartedServer.
type Option func(*Server)

// WithClock sets Server.Clock.
func WithClock(c *Clock) Option { return func(s *Server) { s.Clock = c } }

// WithFaults sets the initial faults (see Server.SetFaults).
func WithFaults(f Faults) Option { return func(s *Server) { s.SetFaults(f) } }

// WithQuotas sets Server.PendingQuota and Server.ExternalQuota.
func WithQuotas(pending, external Quota) Option {
	return func(s *Server) { s.PendingQuota, s.ExternalQuota = pending, external }
}

// WithPendingReissue sets Server.PendingReissue.
func WithPendingReissue(v bool) Option {
	return func(s *Server) { s.PendingReissue = v }
}

// WithPendingForUnregistered sets Server.PendingForUnregistered.
func WithPendingForUnregistered(v bool) Option {
	return func(s *Server) { s.PendingForUnregistered = v }
}

// WithPendingModel sets Server.PendingModel.
func WithPendingModel(m PendingModel) Option {
	return func(s *Server) { s.PendingModel = m }
}

// NewServer returns a started fake WeCom on 127.0.0.1:0. The caller should
// call Close when finished.
func NewServer(opts ...Option) *Server {
	s := NewUnstartedServer(opts...)
	s.Start()
	return s
}

// NewUnstartedServer returns a fake that is not yet listening. Change its
// fields, then call Start. The caller should call Close when finished.
func NewUnstartedServer(opts ...Option) *Server {
	s := &Server{
		CorpID:     "wwtestupstream0001",
		AgentID:    1000002,
		CorpSecret: "testsecret-" + randomHex(16),
		tag:        randomHex(3),
		Clock:      NewClock(time.Now().Truncate(time.Second)),
		closing:    make(chan struct{}),
		tokens:     make(map[string]token),
		script:     make(map[string][]Fault),
		changed:    make(chan struct{}),
		stats:      newStats(),
		w:          newWorld(),
	}
	s.SetFaults(Faults{})
	for _, o := range opts {
		o(s)
	}
	return s
}

// Start starts a server from NewUnstartedServer. It panics if the server was
// already started, or if a field is invalid.
func (s *Server) Start() {
	if s.ts != nil {
		panic("wecomtest: Server already started")
	}
	if s.CorpID == "" || s.CorpSecret == "" || s.Clock == nil {
		panic("wecomtest: Server.CorpID, CorpSecret and Clock must be set before Start")
	}
	if s.PendingModel != PendingWhenRegistered && s.PendingModel != PendingRegisteredFirst {
		panic("wecomtest: unknown Server.PendingModel " + s.PendingModel.String())
	}
	s.pquota = newQuotaCounter(s.PendingQuota.withDefaults(Quota{Hour: 100_000, Day: 480_000, Month: 7_500_000}))
	s.equota = newQuotaCounter(s.ExternalQuota.withDefaults(Quota{Hour: 20_000, Day: 240_000, Month: -1}))
	ts := httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	if s.Listener != nil {
		ts.Listener.Close()
		ts.Listener = s.Listener
	}
	s.Listener = ts.Listener
	ts.Start()
	s.ts = ts
	s.URL = ts.URL
}

// Close shuts the fake down. It cuts short any Faults.Latency delay, then
// blocks until every call in flight has been answered and every Send of a
// Sender made by this server has finished its retries. It may be called
// more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
	s.closeMu.Lock()
	s.sendClosed = true
	senders, clients := s.senders, s.clients
	s.closeMu.Unlock()
	if s.ts != nil {
		s.ts.Close()
	}
	s.sendWG.Wait()
	for _, c := range clients {
		c.Close()
	}
	for _, sd := range senders {
		if sd.own {
			sd.client.CloseIdleConnections()
		}
	}
}

// HTTPClient returns an *http.Client for the fake, whose idle connections
// are closed by Close. Client uses it.
func (s *Server) HTTPClient() *http.Client {
	s.mustStarted("HTTPClient")
	return s.ts.Client()
}

func (s *Server) mustStarted(what string) {
	if s.ts == nil {
		panic("wecomtest: " + what + " called before Start")
	}
}

// token is one issued access_token.
type token struct {
	corpID     string // upstream corp, or the downstream corp for a downstream token
	agentID    int64
	downstream bool
	expires    time.Time // on the fake clock
}

// issueToken stores and returns a new token. s.mu must be held.
func (s *Server) issueToken(corpID string, agentID int64, downstream bool, now time.Time) string {
	// Forget tokens long dead so a long benchmark doesn't grow the map; a
	// day later, answering 40014 instead of 42001 is fine.
	s.ntokens++
	if s.ntokens%1024 == 0 {
		for k, t := range s.tokens {
			if now.Sub(t.expires) > 24*time.Hour {
				delete(s.tokens, k)
			}
		}
	}
	v := "testtoken-" + randomHex(24)
	s.tokens[v] = token{corpID: corpID, agentID: agentID, downstream: downstream, expires: now.Add(s.tokenLifetime())}
	return v
}

// ExpireTokens makes every token issued so far expired (42001), as if
// WeCom revoked them. It does not move the clock.
func (s *Server) ExpireTokens() {
	now := s.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.tokens {
		if t.expires.After(now) {
			t.expires = now
			s.tokens[k] = t
		}
	}
}

// checkToken validates the access_token query parameter.
func (s *Server) checkToken(r *http.Request, now time.Time) (token, int) {
	v := r.URL.Query().Get("access_token")
	if v == "" {
		return token{}, codeTokenMissing
	}
	s.mu.Lock()
	t, ok := s.tokens[v]
	s.mu.Unlock()
	switch {
	case !ok:
		return token{}, codeInvalidToken
	case !now.Before(t.expires):
		return token{}, codeTokenExpired
	}
	return t, 0
}

// serveHTTP is the single entry point: count, delay, fault, dispatch.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	api, ok := strings.CutPrefix(r.URL.Path, PathPrefix)
	if !ok || api == "" {
		api = r.URL.Path
	}
	s.record(func(st *Stats) { st.Calls[api]++ })

	d := s.decide(api)
	if d.latency > 0 {
		t := time.NewTimer(d.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.record(func(st *Stats) { st.Abandoned[api]++ })
			return // nobody is listening any more
		case <-s.closing:
			t.Stop()
			s.drop(w, api)
			return
		}
	}
	switch {
	case d.fault.Drop:
		s.drop(w, api)
		return
	case d.fault.Status != 0:
		s.writeStatus(w, api, d.fault.Status)
		return
	case d.fault.Errcode == codeIPNotAllowed && d.fault.Msg == "":
		s.writeJSONMsg(w, api, codeIPNotAllowed, ipNotAllowedMsg(r), nil)
		return
	case d.fault.Errcode != 0:
		s.writeJSONMsg(w, api, d.fault.Errcode, d.fault.Msg, nil)
		return
	}

	h, method := s.route(api)
	if h == nil {
		s.writeStatus(w, api, http.StatusNotFound)
		return
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		s.writeStatus(w, api, http.StatusMethodNotAllowed)
		return
	}
	now := s.Clock.Now()
	var body []byte
	if r.Method == http.MethodPost {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			return // the client went away mid-body
		}
		if len(b) > maxBody {
			s.writeJSON(w, api, codeDataFormat, nil)
			return
		}
		body = b
	}
	resp, code := h(r, body, now)
	s.writeJSON(w, api, code, resp)
}

type handlerFunc func(r *http.Request, body []byte, now time.Time) (map[string]any, int)

func (s *Server) route(api string) (handlerFunc, string) {
	switch api {
	case APIGetToken:
		return s.getToken, http.MethodGet
	case APIDownstreamGetToken:
		return s.upstream(s.downstreamGetToken), http.MethodPost
	case APIListAppShareInfo:
		return s.upstream(s.listAppShareInfo), http.MethodPost
	case APIUnionIDToPendingID:
		return s.upstream(s.unionIDToPendingID), http.MethodPost
	case APIExternalUserIDToPendingID:
		return s.anyToken(s.externalUserIDToPendingID), http.MethodPost
	case APIUnionIDToExternalUserID:
		return s.upstream(s.unionIDToExternalUserID), http.MethodPost
	case APIGroupChatGet:
		return s.anyToken(s.groupChatGet), http.MethodPost
	}
	return nil, ""
}

type tokenHandlerFunc func(t token, body []byte, now time.Time) (map[string]any, int)

// anyToken wraps an API that accepts the upstream token and downstream tokens.
func (s *Server) anyToken(h tokenHandlerFunc) handlerFunc {
	return func(r *http.Request, body []byte, now time.Time) (map[string]any, int) {
		t, code := s.checkToken(r, now)
		if code != 0 {
			return nil, code
		}
		return h(t, body, now)
	}
}

// upstream wraps an API that only the upstream app's token may call; a
// downstream token gets 48002 (API forbidden).
func (s *Server) upstream(h tokenHandlerFunc) handlerFunc {
	return s.anyToken(func(t token, body []byte, now time.Time) (map[string]any, int) {
		if t.downstream {
			return nil, codeAPIForbidden
		}
		return h(t, body, now)
	})
}

// writeJSON answers like WeCom: HTTP 200, errcode and errmsg merged into resp.
func (s *Server) writeJSON(w http.ResponseWriter, api string, code int, resp map[string]any) {
	s.writeJSONMsg(w, api, code, "", resp)
}

// writeJSONMsg is writeJSON with an errmsg of the caller's ("": the usual one).
func (s *Server) writeJSONMsg(w http.ResponseWriter, api string, code int, msg string, resp map[string]any) {
	if msg == "" {
		msg = errmsg(code)
	}
	out := map[string]any{"errcode": code, "errmsg": msg}
	if code == 0 {
		for k, v := range resp {
			out[k] = v
		}
	}
	b, err := json.Marshal(out)
	if err != nil { // unreachable: our own maps of strings and numbers
		s.writeStatus(w, api, http.StatusInternalServerError)
		return
	}
	s.record(func(st *Stats) {
		inc2(st.Errcodes, api, code)
		inc2(st.Statuses, api, http.StatusOK)
	})
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

func (s *Server) writeStatus(w http.ResponseWriter, api string, status int) {
	s.record(func(st *Stats) { inc2(st.Statuses, api, status) })
	http.Error(w, http.StatusText(status), status)
}

// drop closes the connection without answering.
func (s *Server) drop(w http.ResponseWriter, api string) {
	s.record(func(st *Stats) { st.Dropped[api]++ })
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // the server closes the connection for us
	}
	_ = conn.Close()
}

// WeCom error codes the fake answers (§5; the fake's choice where the
// reference leaves it open is documented in doc.go).
const (
	codeSystemBusy         = -1
	codeInvalidSecret      = 40001
	codeInvalidCorpID      = 40013
	codeInvalidSecretOther = 40091
	codeInvalidToken       = 40014
	codeInvalidChatID      = 40050
	codeInvalidParameter   = 40058
	codeTokenMissing       = 41001
	codeCorpIDMissing      = 41002
	codeSecretMissing      = 41004
	codeTokenExpired       = 42001
	codeFreqOutOfLimit     = 45009
	codeDataFormat         = 47001
	codeAPIForbidden       = 48002
	codeIPNotAllowed       = 60020
	codeNoAgentPrivilege   = 301002
	codeInvalidUnionID     = 610014
	codeOpenNotVerified    = 610015
	codeCorpNotVerified    = 610016
	codeEntityMismatch     = 610017
	codeAppNotInShareScope = 670001
)

func errmsg(code int) string {
	var m string
	switch code {
	case 0:
		return "ok"
	case codeSystemBusy:
		m = "system busy"
	case codeInvalidSecret:
		m = "invalid credential"
	case codeInvalidCorpID:
		m = "invalid corpid"
	case codeInvalidSecretOther:
		m = "secret is invalid"
	case codeInvalidToken:
		m = "invalid access_token"
	case codeInvalidChatID:
		m = "invalid chatid"
	case codeInvalidParameter:
		m = "invalid parameter"
	case codeTokenMissing:
		m = "access_token missing"
	case codeCorpIDMissing:
		m = "corpid missing"
	case codeSecretMissing:
		m = "corpsecret missing"
	case codeTokenExpired:
		m = "access_token expired"
	case codeFreqOutOfLimit:
		m = "api freq out of limit"
	case codeDataFormat:
		m = "Warning: wrong json format"
	case codeAPIForbidden:
		m = "api forbidden"
	case codeNoAgentPrivilege:
		m = "no privilege to access/modify contact/party/agent"
	case codeIPNotAllowed:
		m = "not allow to access from your ip"
	case codeInvalidUnionID:
		m = "invalid unionid"
	case codeOpenNotVerified:
		m = "open platform account not verified"
	case codeCorpNotVerified:
		m = "corp not verified"
	case codeEntityMismatch:
		m = "entity mismatch"
	case codeAppNotInShareScope:
		m = "app not in share scope"
	default:
		m = "injected error"
	}
	// WeCom's errmsg shape, with a hint that says where it came from.
	return fmt.Sprintf("%s, hint: [wecomtest], more info at https://open.work.weixin.qq.com/devtool/query?e=%d", m, code)
}

// ipNotAllowedMsg is WeCom's errmsg of a 60020, naming the caller's IP.
func ipNotAllowedMsg(r *http.Request) string {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	return fmt.Sprintf("not allow to access from your ip, hint: [wecomtest], from ip: %s, more info at https://open.work.weixin.qq.com/devtool/query?e=%d",
		ip, codeIPNotAllowed)
}

// randomHex returns 2n random hex digits.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b) // never fails since Go 1.24; it crashes the program instead
	return hex.EncodeToString(b)
}
