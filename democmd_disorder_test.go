package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/apiclient/openapitest"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// TestDemoDisorder runs "pendinglink demo --scenario disorder" small, once
// per pending_id model, and checks that it links exactly the fake's true
// pairs.
func TestDemoDisorder(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server for about a minute")
	}
	for _, model := range []string{"when-registered", "registered-first"} {
		t.Run(model, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var stdout bytes.Buffer
			err := run(ctx, []string{"demo", "--scenario", "disorder", "--pending-model", model,
				"--fans", "200", "--dealers", "3", "--timeout", "90s"}, func(string) string { return "" }, &stdout, io.Discard)
			t.Log(stdout.String())
			if err != nil {
				t.Fatalf("demo: %v", err)
			}
			out := stdout.String()
			for _, want := range []string{"(100.0 %)", "wrong links       0\n", "wrongly active    0\n", "wrongly ended     0 "} {
				if !strings.Contains(out, want) {
					t.Errorf("report lacks %q", want)
				}
			}
		})
	}
}

// TestDisorderExistingHoldOutlivesRemoval is the smallest form of the bug
// the disorder scenario found (fixed in store/sqlite_follows.go): a fan registers after a
// staff member added them but before the add's callback arrives, so the
// immediate unionid_to_external_userid check holds the customer for an
// unnamed holder; the add's callback then names the staff member, whose
// removal must end the link, and does not.
func TestDisorderExistingHoldOutlivesRemoval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wc := wecomtest.NewServer()
	defer wc.Close()
	d := wc.AddDealer("dealer", "staff-a")
	env := map[string]string{
		"WECOM_CORP_ID": wc.CorpID, "WECOM_AGENT_ID": strconv.FormatInt(wc.AgentID, 10), "WECOM_CORP_SECRET": wc.CorpSecret,
		"WECOM_CALLBACK_TOKEN": testToken, "WECOM_CALLBACK_AES_KEY": testAESKey, "WECOM_API_BASE": wc.URL,
		"WECOM_DOWNSTREAM_CORP_IDS": d.CorpID, "PENDINGLINK_ADMIN_TOKEN": testAdminToken, "PENDINGLINK_ADDR": "127.0.0.1:0",
		"PENDINGLINK_DB": filepath.Join(t.TempDir(), "x.db"), "PENDINGLINK_LOG_LEVEL": "warn",
	}
	cfg, err := loadConfig("demo", nil, mapEnv(env), io.Discard)
	require.NoError(t, err)
	a, err := startApp(ctx, cfg, slog.New(slog.DiscardHandler), appOptions{HTTPClient: wc.HTTPClient()})
	require.NoError(t, err)
	defer a.close()
	base := "http://" + a.addr.String()
	api := &apiclient.Client{BaseURL: base, Token: testAdminToken,
		HTTPClient: &http.Client{Transport: openapitest.MustNew(t).Transport(t, nil)}}
	sender := wc.Sender(base+cfg.CallbackPath, testToken, testAESKey)

	p := wc.AddPerson()
	c := wc.AddCustomer(d, p, "staff-a")
	add := wc.ContactEvent(c, wecom.ChangeAddExternalContact)
	wc.Clock.Advance(time.Second)
	_, _, err = api.RegisterFan(ctx, store.FanInput{UnionID: p.UnionID, OpenID: p.OpenID})
	require.NoError(t, err)
	quiet := func() {
		require.Eventually(t, func() bool {
			st, err := api.Status(ctx)
			return err == nil && st.Queue.Pending == 0 && st.Events.Pending == 0
		}, 30*time.Second, 50*time.Millisecond)
	}
	quiet() // the immediate check has linked the customer
	_, err = sender.Send(ctx, add)
	require.NoError(t, err)
	quiet()
	wc.RemoveCustomer(c)
	_, err = sender.Send(ctx, wc.ContactEvent(c, wecom.ChangeDelFollowUser))
	require.NoError(t, err)
	quiet()
	cd, err := api.Customer(ctx, d.CorpID, c.ExternalUserID)
	require.NoError(t, err)
	require.Len(t, cd.Links, 1)
	require.False(t, cd.Links[0].Active, "staff-a, its only follower, removed the customer: %+v", cd.Links[0])
}
