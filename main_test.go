package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/pendinglink/pendinglink/crypto"
	"github.com/pendinglink/pendinglink/wecom"
)

const (
	testCorpID     = "wwtestcorp000001"
	testToken      = "QDG6eK"
	testAESKey     = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	testSecret     = "test-corp-secret-do-not-log"
	testAdminToken = "test-admin-token-0123456789"
)

func testEnv(dbPath string) map[string]string {
	return map[string]string{
		"WECOM_CORP_ID": testCorpID, "WECOM_AGENT_ID": "1000002", "WECOM_CORP_SECRET": testSecret,
		"WECOM_CALLBACK_TOKEN": testToken, "WECOM_CALLBACK_AES_KEY": testAESKey,
		"PENDINGLINK_ADMIN_TOKEN": testAdminToken, "PENDINGLINK_ADDR": "127.0.0.1:0",
		"PENDINGLINK_DB": dbPath,
		// Nothing listens there: these tests exercise ingress, and the
		// pipeline must never reach the real WeCom from a test.
		"WECOM_API_BASE": "http://127.0.0.1:1",
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		env := testEnv("x.db")
		delete(env, "WECOM_API_BASE")
		cfg, err := loadConfig("serve", nil, mapEnv(env), io.Discard)
		require.NoError(t, err)
		require.Equal(t, testCorpID, cfg.CorpID)
		require.Equal(t, "https://qyapi.weixin.qq.com", cfg.APIBase)
		require.Equal(t, 24*time.Hour, cfg.CallbackMaxAge)
		require.Equal(t, "/wecom/callback", cfg.CallbackPath)
		require.Equal(t, "allowlist", cfg.ReceiveIDCheck)
	})

	t.Run("FlagOverridesEnv", func(t *testing.T) {
		t.Parallel()
		cfg, err := loadConfig("serve", []string{"--pendinglink-callback-max-age", "0", "--wecom-downstream-corp-ids", "wwa, wwb"},
			mapEnv(testEnv("x.db")), io.Discard)
		require.NoError(t, err)
		require.Zero(t, cfg.CallbackMaxAge)
		require.Equal(t, []string{"wwa", "wwb"}, cfg.DownstreamCorps)
	})

	for _, tc := range []struct{ name, env, value, want string }{
		{"ErrMissingCorpID", "WECOM_CORP_ID", "", "WECOM_CORP_ID: required"},
		{"ErrMissingSecret", "WECOM_CORP_SECRET", "", "WECOM_CORP_SECRET: required"},
		{"ErrBadAgentID", "WECOM_AGENT_ID", "abc", "WECOM_AGENT_ID: must be a positive integer"},
		{"ErrBadReceiveIDCheck", "WECOM_RECEIVE_ID_CHECK", "maybe", "WECOM_RECEIVE_ID_CHECK: must be"},
		{"ErrShortAdminToken", "PENDINGLINK_ADMIN_TOKEN", "short-secret", "PENDINGLINK_ADMIN_TOKEN: must be at least 16"},
		{"ErrBadMaxAge", "PENDINGLINK_CALLBACK_MAX_AGE", "soon", "PENDINGLINK_CALLBACK_MAX_AGE: must be"},
		{"ErrBadLogLevel", "PENDINGLINK_LOG_LEVEL", "loud", "PENDINGLINK_LOG_LEVEL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := testEnv("x.db")
			env[tc.env] = tc.value
			_, err := loadConfig("serve", nil, mapEnv(env), io.Discard)
			require.ErrorContains(t, err, tc.want)
			if tc.value != "" {
				require.NotContains(t, err.Error(), tc.value, "errors never echo the value")
			}
		})
	}

	t.Run("SecretsAreMaskedInLogs", func(t *testing.T) {
		t.Parallel()
		cfg, err := loadConfig("serve", nil, mapEnv(testEnv("x.db")), io.Discard)
		require.NoError(t, err)
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("cfg", "config", cfg)
		for _, secret := range []string{testSecret, testToken, testAESKey, testAdminToken} {
			require.NotContains(t, buf.String(), secret)
		}
		require.Contains(t, buf.String(), testCorpID)
	})
}

func TestRun(t *testing.T) {
	t.Parallel()

	t.Run("Version", func(t *testing.T) {
		t.Parallel()
		var out bytes.Buffer
		require.NoError(t, run(context.Background(), []string{"version"}, mapEnv(nil), &out, io.Discard))
		require.True(t, strings.HasPrefix(out.String(), "pendinglink "))
	})

	t.Run("ErrUnknownCommand", func(t *testing.T) {
		t.Parallel()
		err := run(context.Background(), []string{"frobnicate"}, mapEnv(nil), io.Discard, io.Discard)
		require.ErrorContains(t, err, `unknown command "frobnicate"`)
	})

	t.Run("ErrInvalidAESKeyNamesTheVariable", func(t *testing.T) {
		t.Parallel()
		env := testEnv(filepath.Join(t.TempDir(), "t.db"))
		env["WECOM_CALLBACK_AES_KEY"] = "tooshort-but-secret"
		err := run(context.Background(), []string{"serve"}, mapEnv(env), io.Discard, io.Discard)
		require.ErrorContains(t, err, "WECOM_CALLBACK_AES_KEY")
		require.NotContains(t, err.Error(), "tooshort-but-secret")
	})

	t.Run("ServeStopsOnCancel", func(t *testing.T) {
		t.Parallel()
		// Ensure serve answers health checks and returns cleanly when its context ends (SIGTERM).
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"serve"}, mapEnv(testEnv(filepath.Join(t.TempDir(), "t.db"))), pw, io.Discard)
			pw.Close()
		}()
		addr := waitListening(t, pr)
		go io.Copy(io.Discard, pr)
		resp, err := http.Get("http://" + addr + "/healthz")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		cancel()
		require.NoError(t, <-done)
	})
}

// waitListening reads JSON log lines until the "listening" line and returns its address.
func waitListening(t testing.TB, r io.Reader) string {
	t.Helper()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var line struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
			return line.Addr
		}
	}
	t.Fatalf("server exited before listening: %v", sc.Err())
	return ""
}

// TestServe_KillNineKeepsAcknowledgedEvents builds the real binary, sends it
// callbacks, kills it with SIGKILL right after the 200s, restarts it on the
// same database and checks every acknowledged event is stored exactly once.
func TestServe_KillNineKeepsAcknowledgedEvents(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "pendinglink")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())
	dbPath := filepath.Join(dir, "kill.db")

	start := func() (*exec.Cmd, string) {
		cmd := exec.Command(bin, "serve")
		for k, v := range testEnv(dbPath) {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		addr := waitListening(t, stdout)
		go io.Copy(io.Discard, stdout)
		return cmd, addr
	}

	cmd, addr := start()
	cr, err := crypto.New(testToken, testAESKey)
	require.NoError(t, err)
	const n = 300
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		wg    sync.WaitGroup
	)
	now := time.Now()
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("wmtestkill%04d", i%(n*2/3)) // a third are WeCom-style retries
			ev := wecom.Event{ToUserName: testCorpID, FromUserName: "sys", CreateTime: now.Unix(), MsgType: "event",
				Event: wecom.EventChangeExternalContact, ChangeType: wecom.ChangeAddExternalContact, UserID: "staff1", ExternalUserID: id}
			msg, err := ev.Marshal()
			if err != nil {
				t.Error(err)
				return
			}
			ts, nonce := strconv.FormatInt(now.Unix(), 10), strconv.Itoa(i)
			body, sig, err := cr.Seal(msg, testCorpID, testCorpID, "1000002", ts, nonce, nil)
			if err != nil {
				t.Error(err)
				return
			}
			q := url.Values{"msg_signature": {sig}, "timestamp": {ts}, "nonce": {nonce}}
			resp, err := http.Post("http://"+addr+"/wecom/callback?"+q.Encode(), "text/xml", bytes.NewReader(body))
			if err != nil {
				return // the kill may race a request; only acknowledged ones count
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.Len(t, acked, n*2/3, "every unique event was acknowledged before the kill")

	// Restart on the same file: migrations and recovery must cope with the crash.
	cmd, addr = start()
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	resp, err := http.Get("http://" + addr + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	db, err := sql.Open("sqlite", "file:"+dbPath+"?mode=ro&_pragma=busy_timeout(5000)")
	require.NoError(t, err)
	defer db.Close()
	rows, err := db.Query(`SELECT external_userid, count(*) FROM events GROUP BY external_userid`)
	require.NoError(t, err)
	defer rows.Close()
	stored := map[string]int{}
	for rows.Next() {
		var id string
		var c int
		require.NoError(t, rows.Scan(&id, &c))
		stored[id] = c
	}
	require.NoError(t, rows.Err())
	for id := range acked {
		require.Equal(t, 1, stored[id], "acknowledged event %s stored once", id)
	}
	require.Len(t, stored, len(acked))
}

// TestREADMEConfigTable keeps the README's configuration table true: every
// setting is documented with its default.
func TestREADMEConfigTable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	for _, s := range settings() {
		row := "| `" + s.env + "` |"
		require.True(t, strings.Contains(string(readme), row), "README config table lacks %s", s.env)
		line := string(readme)[strings.Index(string(readme), row):]
		line = line[:strings.Index(line, "\n")]
		if s.def != "" {
			require.Contains(t, line, "`"+s.def+"`", "README default of %s", s.env)
		}
		if s.required {
			require.Contains(t, line, "required", "README must say %s is required", s.env)
		}
	}
}
