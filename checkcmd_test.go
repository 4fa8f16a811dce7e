package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// TestCheckCommand runs `pendinglink check` with the configuration of a
// running serve: the verification request goes to the real callback
// handler, the database is the one serve holds open.
func TestCheckCommand(t *testing.T) {
	t.Parallel()
	const hookSecret = "check-webhook-secret-0123"
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get(pipeline.SignatureHeader) != (&pipeline.Webhook{Secret: hookSecret}).Sign(body) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	hookEnv := map[string]string{"PENDINGLINK_WEBHOOK_URL": hook.URL, "PENDINGLINK_WEBHOOK_SECRET": hookSecret}
	w := startE2E(t, e2eOptions{Dealers: 2, Env: hookEnv})
	env := func() map[string]string {
		env := fakeWeComEnv(w.wc, w.token, w.aesKey, w.admin, w.cfg.DB, w.dealers)
		for k, v := range hookEnv {
			env[k] = v
		}
		return env
	}
	check := func(t *testing.T, env map[string]string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), []string{"check", "--url", w.url(w.cfg.CallbackPath)}, mapEnv(env), &out, io.Discard)
		for _, secret := range []string{w.wc.CorpSecret, w.token, w.aesKey, w.admin, hookSecret} {
			require.NotContains(t, out.String(), secret, "no secret is printed")
		}
		return out.String(), err
	}

	t.Run("AllGood", func(t *testing.T) {
		t.Parallel()
		out, err := check(t, env())
		require.NoError(t, err, out)
		for _, line := range []string{"✓ callback keys:", "✓ corp id and secret:", "✓ shared app: app [AgentId 1000002] is shared with 2 dealers",
			"✓ trusted IP:", "✓ pending_id permission:", "✓ database: SQLite", "✓ quota:",
			"✓ callback URL: " + w.url(w.cfg.CallbackPath) + " answered WeCom's verification", "✓ webhook:"} {
			require.Contains(t, out, "\n"+line, out)
		}
		require.Contains(t, out, "9 passed, 0 failed, 0 skipped")
	})

	t.Run("ErrServeHasAnotherToken", func(t *testing.T) {
		t.Parallel()
		e := env()
		e["WECOM_CALLBACK_TOKEN"] = wecomtest.RandomToken(16)
		out, err := check(t, e)
		require.EqualError(t, err, "check: 1 failed")
		require.Contains(t, out, "\n✗ callback URL: "+w.url(w.cfg.CallbackPath)+" refused the signature (401)")
		require.Equal(t, 1, strings.Count(out, "\n✗ "), out)
	})

	t.Run("ErrBadFlag", func(t *testing.T) {
		t.Parallel()
		err := run(context.Background(), []string{"check", "--no-such-flag"}, mapEnv(env()), io.Discard, io.Discard)
		require.ErrorContains(t, err, "no-such-flag")
	})
}
