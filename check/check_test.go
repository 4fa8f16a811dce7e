package check_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/check"
	"github.com/pendinglink/pendinglink/crypto"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

const testWebhookSecret = "test-webhook-secret-never-printed"

// testBundle is one deployment to check: a fake WeCom with dealers, a
// callback URL, a webhook and a database, all healthy until a case breaks
// one.
type testBundle struct {
	wc               *wecomtest.Server
	cfg              check.Config
	token, aesKey    string
	callback         http.Handler // what the callback URL answers; defaults to a correct echo
	webhookStatus    int          // what the webhook answers
	webhookSignature chan string  // the signature each webhook delivery carried, checked
	db               *store.DB    // set by withDB
}

func setup(t *testing.T, dealers int) *testBundle {
	t.Helper()
	wc := wecomtest.NewServer()
	t.Cleanup(wc.Close)
	for i := range dealers {
		wc.AddDealer("dealer-"+string(rune('a'+i)), "staff-a")
	}
	b := &testBundle{wc: wc, token: wecomtest.RandomToken(16), aesKey: wecomtest.RandomAESKey(),
		webhookStatus: http.StatusNoContent, webhookSignature: make(chan string, 1)}
	cr, err := crypto.New(b.token, b.aesKey)
	require.NoError(t, err)
	b.callback = echoHandler(cr)
	callback := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { b.callback.ServeHTTP(w, r) }))
	t.Cleanup(callback.Close)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sig := r.Header.Get(pipeline.SignatureHeader)
		select {
		case b.webhookSignature <- sig:
		default:
		}
		if sig != (&pipeline.Webhook{Secret: testWebhookSecret}).Sign(body) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		w.WriteHeader(b.webhookStatus)
	}))
	t.Cleanup(hook.Close)

	pending := quota.Config{Key: wecom.PendingIDQuotaKey(wc.CorpID), Windows: wecom.PendingIDWindows(100_000, 480_000, 7_500_000)}
	external := quota.Config{Key: wecom.ExternalUserIDQuotaKey(wc.CorpID), Windows: wecom.ExternalUserIDWindows(20_000, 240_000)}
	b.cfg = check.Config{
		WeCom:         wc.ClientConfig(),
		CallbackToken: b.token, CallbackAESKey: b.aesKey,
		DB:          filepath.Join(t.TempDir(), "pendinglink.db"), // not created yet, as on day one
		Quotas:      []quota.Config{pending, external},
		CallbackURL: callback.URL + "/wecom/callback?x=1",
		Webhook:     &pipeline.Webhook{URL: hook.URL + "/hook?key=webhook-url-credential", Secret: testWebhookSecret},
		Now:         wc.Clock.Now,
	}
	return b
}

// withDB gives the deployment a migrated database, open as serve holds it.
func (b *testBundle) withDB(t *testing.T) {
	t.Helper()
	b.db = storetest.MustOpen(t, store.Config{DSN: b.cfg.DB})
}

// echoHandler answers WeCom's verification request as serve does: 401 for a
// bad signature, 400 for an undecryptable echostr, else the plaintext.
func echoHandler(cr *crypto.Crypt) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if cr.VerifySignature(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), q.Get("echostr")) != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		msg, _, err := cr.Decrypt(q.Get("echostr"))
		if err != nil {
			http.Error(w, "bad echostr", http.StatusBadRequest)
			return
		}
		_, _ = w.Write(msg)
	})
}

// failNext is a case's setup that scripts WeCom's next answer to api.
func failNext(api string, errcode int) func(*testing.T, *testBundle) {
	return func(_ *testing.T, b *testBundle) { b.wc.FailNext(api, wecomtest.Fault{Errcode: errcode}) }
}

// fails is a case's want where line alone fails, with contains.
func fails(line string, contains ...string) map[string]want {
	return map[string]want{line: {check.Fail, contains}}
}

// want is what a case expects of one line.
type want struct {
	mark     check.Mark
	contains []string // in Text, then Fix
}

func TestRun(t *testing.T) {
	t.Parallel()

	allPass := func() map[string]want {
		return map[string]want{
			check.LineCallbackKeys: {check.Pass, []string{"well-formed"}},
			check.LineSecret:       {check.Pass, []string{"WeCom accepted corp id wwtest", "(gettoken)"}},
			check.LineSharedApp:    {check.Pass, []string{"shared with 2 dealers: dealer-a (wwtest", "dealer-b"}},
			check.LineTrustedIP:    {check.Pass, []string{"WeCom answered calls from this machine's IP"}},
			check.LinePendingID:    {check.Pass, []string{"with the upstream token", "no unionid_to_pending_id quota spent"}},
			check.LineDatabase:     {check.Pass, []string{"does not exist yet: serve creates it and applies"}},
			check.LineQuota:        {check.Pass, []string{"unionid_to_pending_id 0 of 100,000 per hour", "unionid_to_external_userid 0 of 20,000 per hour"}},
			check.LineCallbackURL:  {check.Pass, []string{"answered WeCom's verification with the decrypted echostr"}},
			check.LineWebhook:      {check.Pass, []string{"acknowledged a signed test delivery"}},
		}
	}
	// noToken is what a case expects when gettoken fails: secret, and the
	// checks that need a token not made.
	noToken := func(secret want) map[string]want {
		notChecked := want{check.Skip, []string{"not checked: needs an access token"}}
		return map[string]want{check.LineSecret: secret, check.LineSharedApp: notChecked, check.LineTrustedIP: notChecked, check.LinePendingID: notChecked}
	}

	for _, tc := range []struct {
		name    string
		dealers int // defaults to 2
		setup   func(t *testing.T, b *testBundle)
		want    map[string]want // lines that differ from allPass
	}{
		{name: "AllGood"},
		{
			name:  "AllGoodMigratedDatabase",
			setup: func(t *testing.T, b *testBundle) { b.withDB(t) },
			want: map[string]want{
				check.LineDatabase: {check.Pass, []string{"SQLite 3.", "migrations applied", "iB"}},
			},
		},
		{
			name:  "AllGoodPostgres",
			setup: func(t *testing.T, b *testBundle) { b.cfg.DB = storetest.PostgresDSN(t) },
			want: map[string]want{
				check.LineDatabase: {check.Pass, []string{"PostgreSQL 1", "migrations applied", "iB"}},
			},
		},
		{
			name: "OptionalItemsLeftOut",
			setup: func(t *testing.T, b *testBundle) {
				b.cfg.CallbackURL, b.cfg.Webhook = "", nil
			},
			want: map[string]want{
				check.LineCallbackURL: {check.Skip, []string{"give --url https://"}},
				check.LineWebhook:     {check.Skip, []string{"none configured"}},
			},
		},
		{
			name:  "WrongCorpID",
			setup: func(t *testing.T, b *testBundle) { b.cfg.WeCom.CorpID = "wwtestnosuchcorp" },
			want:  noToken(want{check.Fail, []string{"WeCom does not know corp id wwtestnosuchcorp (40013)", "我的企业 → 企业信息 → 企业ID / My Company"}}),
		},
		{
			name:  "WrongSecret",
			setup: func(t *testing.T, b *testBundle) { b.cfg.WeCom.CorpSecret = "testsecret-wrong" },
			want:  noToken(want{check.Fail, []string{"WeCom refused WECOM_CORP_SECRET", "(40001)", "应用管理 → [AgentId 1000002] → Secret → 查看 / App Management"}}),
		},
		{
			name:  "SecretOfAnotherCorp",
			setup: failNext(wecomtest.APIGetToken, 40091),
			want:  noToken(want{check.Fail, []string{"(40091)", "WECOM_CORP_SECRET"}}),
		},
		{
			name: "WeComUnreachable",
			setup: func(t *testing.T, b *testBundle) {
				closed := httptest.NewServer(http.NotFoundHandler())
				closed.Close()
				b.cfg.WeCom.BaseURL = closed.URL
			},
			want: noToken(want{check.Fail, []string{"no answer from WeCom", "allow outbound HTTPS"}}),
		},
		{
			name:  "UntrustedIP",
			setup: func(t *testing.T, b *testBundle) { b.wc.SetFaults(wecomtest.Faults{UntrustedIP: true}) },
			want: map[string]want{
				check.LineTrustedIP: {check.Fail, []string{"WeCom refused calls from 127.0.0.1 (60020)",
					"应用管理 → [AgentId 1000002] → 企业可信IP → 配置 / App Management → [AgentId 1000002] → Trusted IPs → Configure: add 127.0.0.1"}},
				check.LineSharedApp: {check.Skip, []string{"WeCom refused this machine's IP"}},
				check.LinePendingID: {check.Skip, []string{"WeCom refused this machine's IP"}},
			},
		},
		{
			name: "UntrustedIPNamedByWeCom",
			setup: func(t *testing.T, b *testBundle) {
				b.wc.FailNext(wecomtest.APIExternalUserIDToPendingID, wecomtest.Fault{Errcode: 60020,
					Msg: "not allow to access from your ip, hint: [1700000000_x], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=60020"})
			},
			want: map[string]want{
				check.LineTrustedIP: {check.Fail, []string{"WeCom refused calls from 203.0.113.7 (60020)", "Configure: add 203.0.113.7"}},
				check.LinePendingID: {check.Skip, []string{"WeCom refused this machine's IP"}},
			},
		},
		{
			name:    "NoDealerSharesTheApp",
			dealers: -1,
			want:    fails(check.LineSharedApp, "shared with no dealer (list_app_share_info is empty)", "上下游 → 共享应用", "Upstream & Downstream → Shared Apps"),
		},
		{
			name:  "AppNotInShareScope",
			setup: failNext(wecomtest.APIListAppShareInfo, 670001),
			want:  fails(check.LineSharedApp, "not in any share scope (670001)", "上下游 → 共享应用"),
		},
		{
			name:  "WrongAgentID",
			setup: func(t *testing.T, b *testBundle) { b.cfg.WeCom.AgentID = 1000099 },
			want:  fails(check.LineSharedApp, "WECOM_AGENT_ID AgentId 1000099 is not the app of WECOM_CORP_SECRET (301002)", "AgentId"),
		},
		{name: "NoCustomerContactPermission", setup: failNext(wecomtest.APIExternalUserIDToPendingID, 48002),
			want: fails(check.LinePendingID, "may not call the pending_id APIs (48002, with the upstream token)", "客户联系 → API → 可调用接口的应用 → 添加 [AgentId 1000002] / Customer Contact → API", "「企业客户」")},
		{name: "CorpNotVerified", setup: failNext(wecomtest.APIExternalUserIDToPendingID, 610016),
			want: fails(check.LinePendingID, "the corp is not verified (610016", "我的企业 → 企业信息 → 企业认证 / My Company")},
		{name: "EntityMismatch", setup: failNext(wecomtest.APIExternalUserIDToPendingID, 610017),
			want: fails(check.LinePendingID, "not verified under the corp's entity name (610017", "same entity name")},
		{name: "OpenPlatformNotVerified", setup: failNext(wecomtest.APIExternalUserIDToPendingID, 610015),
			want: fails(check.LinePendingID, "Open Platform account (unionid) is not verified (610015", "开发者资质认证")},
		{
			name:  "InvalidIDMeansPermitted",
			setup: failNext(wecomtest.APIExternalUserIDToPendingID, 40096),
		},
		{
			name:  "DownstreamToken",
			setup: func(t *testing.T, b *testBundle) { b.cfg.WeCom.PendingToken = wecom.PendingTokenDownstream },
			want: map[string]want{
				check.LinePendingID: {check.Pass, []string{"with dealer wwtest", "'s token"}},
			},
		},
		{
			name:    "DownstreamTokenWithoutDealer",
			dealers: -1,
			setup:   func(t *testing.T, b *testBundle) { b.cfg.WeCom.PendingToken = wecom.PendingTokenDownstream },
			want: map[string]want{
				check.LineSharedApp: {check.Fail, []string{"shared with no dealer"}},
				check.LinePendingID: {check.Skip, []string{"WECOM_PENDING_TOKEN=downstream needs a dealer"}},
			},
		},
		{
			name:  "MalformedCallbackKey",
			setup: func(t *testing.T, b *testBundle) { b.cfg.CallbackAESKey = "too-short" },
			want: map[string]want{
				check.LineCallbackKeys: {check.Fail, []string{"WECOM_CALLBACK_AES_KEY", "接收消息 → 设置API接收 / App Management"}},
				check.LineCallbackURL:  {check.Skip, []string{"callback keys are malformed"}},
			},
		},
		{
			name: "CallbackURLWithAnotherToken",
			setup: func(t *testing.T, b *testBundle) {
				other, err := crypto.New(wecomtest.RandomToken(16), b.aesKey)
				require.NoError(t, err)
				b.callback = echoHandler(other)
			},
			want: fails(check.LineCallbackURL, "refused the signature (401)", "another WECOM_CALLBACK_TOKEN", "设置API接收"),
		},
		{
			name: "CallbackURLWithAnotherKey",
			setup: func(t *testing.T, b *testBundle) {
				other, err := crypto.New(b.token, wecomtest.RandomAESKey())
				require.NoError(t, err)
				b.callback = echoHandler(other)
			},
			want: fails(check.LineCallbackURL, "could not decrypt echostr (400)", "another WECOM_CALLBACK_AES_KEY"),
		},
		{
			name: "CallbackURLNotPendinglink",
			setup: func(t *testing.T, b *testBundle) {
				b.callback = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") })
			},
			want: fails(check.LineCallbackURL, "answered 200 but not the decrypted echostr"),
		},
		{
			name:  "CallbackURLWrongPath",
			setup: func(t *testing.T, b *testBundle) { b.callback = http.NotFoundHandler() },
			want:  fails(check.LineCallbackURL, "is not found (404)", "PENDINGLINK_CALLBACK_PATH"),
		},
		{
			name: "CallbackURLRedirects",
			setup: func(t *testing.T, b *testBundle) {
				b.callback = http.RedirectHandler("https://example.com/elsewhere", http.StatusFound)
			},
			want: fails(check.LineCallbackURL, "answers a redirect (302)"),
		},
		{
			name: "CallbackURLTooSlow",
			setup: func(t *testing.T, b *testBundle) {
				echo := b.callback
				b.callback = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					b.wc.Clock.Advance(1500 * time.Millisecond) // the answer takes 1.5 s on the check's clock
					echo.ServeHTTP(w, r)
				})
			},
			want: fails(check.LineCallbackURL, "answered right but in 1.5s; WeCom waits 1s"),
		},
		{
			name: "CallbackURLUnreachable",
			setup: func(t *testing.T, b *testBundle) {
				closed := httptest.NewServer(http.NotFoundHandler())
				closed.Close()
				b.cfg.CallbackURL = closed.URL + "/wecom/callback"
			},
			want: fails(check.LineCallbackURL, "no answer from http://127.0.0.1:", "reachable from the internet"),
		},
		{
			name:  "WebhookRefuses",
			setup: func(t *testing.T, b *testBundle) { b.webhookStatus = http.StatusInternalServerError },
			want:  fails(check.LineWebhook, "a signed test delivery to http://127.0.0.1:", "/hook failed: webhook: status 500", "PENDINGLINK_WEBHOOK_SECRET"),
		},
		{
			name:  "WebhookWithAnotherSecret",
			setup: func(t *testing.T, b *testBundle) { b.cfg.Webhook.Secret = "another-secret" },
			want:  fails(check.LineWebhook, "status 401"),
		},
		{
			name: "DatabaseFromANewerVersion",
			setup: func(t *testing.T, b *testBundle) {
				b.withDB(t)
				_, err := b.db.SQL().ExecContext(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)`)
				require.NoError(t, err)
			},
			want: fails(check.LineDatabase, "migrated by a newer pendinglink: migrations [999]", "run the pendinglink version"),
		},
		{
			name:  "DatabaseDirectoryMissing",
			setup: func(t *testing.T, b *testBundle) { b.cfg.DB = filepath.Join(t.TempDir(), "gone", "pendinglink.db") },
			want: map[string]want{
				check.LineDatabase: {check.Fail, []string{"cannot read", "does not exist", "check PENDINGLINK_DB"}},
				check.LineQuota:    {check.Skip, []string{"not read"}},
			},
		},
		{
			name: "QuotaSeen",
			setup: func(t *testing.T, b *testBundle) {
				b.withDB(t)
				bucket := b.wc.Clock.Now().Add(-10 * time.Minute).Truncate(time.Minute).Unix()
				require.NoError(t, b.db.AddQuota(t.Context(), wecom.PendingIDQuotaKey(b.wc.CorpID), bucket, 100_000))
				require.NoError(t, b.db.AddQuota(t.Context(), wecom.ExternalUserIDQuotaKey(b.wc.CorpID), bucket, 1234))
			},
			want: map[string]want{
				check.LineDatabase: {check.Pass, []string{"migrations applied"}},
				check.LineQuota: {check.Pass, []string{"unionid_to_pending_id 100,000 of 100,000 per hour, 100,000 of 480,000 per day",
					"unionid_to_external_userid 1,234 of 20,000 per hour", "spent now, so that work waits: unionid_to_pending_id per hour"}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dealers := tc.dealers
			switch dealers {
			case 0:
				dealers = 2
			case -1:
				dealers = 0
			}
			b := setup(t, dealers)
			if tc.setup != nil {
				tc.setup(t, b)
			}
			report := check.Run(t.Context(), b.cfg)

			want := allPass()
			for name, w := range tc.want {
				want[name] = w
			}
			wantFailed := 0
			for _, w := range want {
				if w.mark == check.Fail {
					wantFailed++
				}
			}
			var names []string
			for _, l := range report {
				names = append(names, l.Name)
				w, ok := want[l.Name]
				require.True(t, ok, "unexpected line %q", l.Name)
				require.Equal(t, w.mark, l.Mark, "%s", l)
				for _, s := range w.contains {
					require.Contains(t, l.Text+" "+l.Fix, s, "%s", l)
				}
				require.Equal(t, l.Mark == check.Fail, l.Fix != "", "a fix on failed lines only: %s", l)
			}
			require.Equal(t, []string{check.LineCallbackKeys, check.LineSecret, check.LineSharedApp, check.LineTrustedIP,
				check.LinePendingID, check.LineDatabase, check.LineQuota, check.LineCallbackURL, check.LineWebhook}, names)
			require.Equal(t, wantFailed, report.Failed())

			var out bytes.Buffer
			require.NoError(t, report.Print(&out))
			require.Equal(t, len(report)+1, strings.Count(out.String(), "\n"), "one line per check and a summary")
			for _, secret := range []string{b.cfg.WeCom.CorpSecret, b.token, b.aesKey, testWebhookSecret, "webhook-url-credential", "testtoken-"} {
				require.NotContains(t, out.String(), secret, "no secret is printed")
			}
		})
	}
}

func TestLine_String(t *testing.T) {
	t.Parallel()
	l := check.Line{Mark: check.Fail, Name: check.LineDatabase,
		Text: "cannot read: failed to connect:\n\t127.0.0.1:1: refused\n\t[::1]:1: refused", Fix: "check PENDINGLINK_DB"}
	require.Equal(t, "✗ database: cannot read: failed to connect:; 127.0.0.1:1: refused; [::1]:1: refused. Fix: check PENDINGLINK_DB", l.String())
}

// TestRun_WebhookDeliveryIsSigned checks the test delivery carries the
// signature a real one would.
func TestRun_WebhookDeliveryIsSigned(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	report := check.Run(context.Background(), b.cfg)
	l, ok := report.Line(check.LineWebhook)
	require.True(t, ok)
	require.Equal(t, check.Pass, l.Mark, "%s", l)
	require.True(t, strings.HasPrefix(<-b.webhookSignature, "sha256="))
}
