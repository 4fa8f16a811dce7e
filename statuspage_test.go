package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/demo"
)

// findChromium returns the path of a Chromium to drive, "" if none.
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// artifactDir is where the test leaves screenshots: $PENDINGLINK_ARTIFACTS
// (.ci/run keeps them), else a temporary directory.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("PENDINGLINK_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// lineSignal is the demo's stdout: it keeps everything and closes seen
// once a line containing want was written.
type lineSignal struct {
	want string
	seen chan struct{}

	mu   sync.Mutex
	buf  bytes.Buffer
	once sync.Once
}

func (w *lineSignal) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *lineSignal) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// demoWorld runs the demo (a smaller world) with --keep and returns the
// base URL and admin token of its server once every job is done. The demo
// stops when the test ends.
func demoWorld(t *testing.T, o demo.Options) (base, admin string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	o.Keep = true
	o.Env = map[string]string{}
	o.StartServer = func(ctx context.Context, env map[string]string, hc *http.Client) (string, func() error, error) {
		cfg, err := loadConfig("demo", nil, mapEnv(env), io.Discard)
		if err != nil {
			return "", nil, err
		}
		a, err := startApp(ctx, cfg, slog.New(slog.DiscardHandler), appOptions{HTTPClient: hc})
		if err != nil {
			return "", nil, err
		}
		base, admin = "http://"+a.addr.String(), cfg.AdminToken
		return base, a.close, nil
	}
	out := &lineSignal{want: "serving until interrupted", seen: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- demo.Run(ctx, o, out) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case <-out.seen:
		return base, admin
	case err := <-done:
		require.FailNow(t, "demo ended before serving", "%v\n%s", err, out)
	case <-time.After(3 * time.Minute): // an upper bound for a broken pipeline, not an expectation
		require.FailNow(t, "demo did not settle", "%s", out)
	}
	return "", ""
}

// browserContext starts a headless Chromium with a fresh profile and the
// flags it needs on a network without outside access.
func browserContext(t *testing.T, chromium string) context.Context {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first Run starts the browser and must not carry a timeout.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")))
	return ctx
}

// bounded gives one step an upper bound, so a broken page fails instead
// of hanging.
func bounded(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, e2eTimeout)
	t.Cleanup(cancel)
	return c
}

// pageNumber reads a number the page shows (e.g. "1,432").
func pageNumber(t *testing.T, ctx context.Context, sel string) int64 {
	t.Helper()
	text, err := chromedp.Run(bounded(t, ctx), chromedp.Text(sel))
	require.NoError(t, err, sel)
	n, err := strconv.ParseInt(strings.ReplaceAll(strings.TrimSpace(text), ",", ""), 10, 64)
	require.NoError(t, err, "%s shows %q", sel, text)
	return n
}

func TestStatusPage_InChromium(t *testing.T) {
	chromium := findChromium()
	if chromium == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed, and CI must run this test: .ci/run installs it")
		}
		t.Skip("chromium is not installed: apt-get install chromium (.ci/run does)")
	}
	artifacts := artifactDir(t)
	base, admin := demoWorld(t, demo.Options{
		Fans: 120, Customers: 180, Dealers: 2, FanShare: 0.5, Chats: 2, ChatSize: 10, Removals: 10,
		DupShare: 0.05, Seed: 7, Timeout: 2 * time.Minute, QuotaHour: 3_600_000,
	})
	api := &apiclient.Client{BaseURL: base, Token: admin, HTTPClient: &http.Client{Timeout: e2eTimeout}}
	ctx := browserContext(t, chromium)
	screenshot := func(name string, shot chromedp.Action[[]byte]) {
		t.Helper()
		png, err := chromedp.Run(bounded(t, ctx), shot)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(artifacts, name), png, 0o644))
	}

	// Sign in through the form.
	require.NoError(t, chromedp.Do(bounded(t, ctx),
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(`#token`),
		chromedp.SendKeys(`#token`, "not-the-token"),
		chromedp.Submit(`#token`),
		chromedp.WaitVisible(`#login-error`),
	))
	require.NoError(t, chromedp.Do(bounded(t, ctx),
		chromedp.SendKeys(`#token`, admin),
		chromedp.Submit(`#token`),
		chromedp.WaitVisible(`#chart-events svg`),
		chromedp.WaitVisible(`#quota .meter`),
	))
	_, err := chromedp.Run(bounded(t, ctx), chromedp.Poll[bool](`document.querySelector('[data-k="links.active"]').textContent !== ''`))
	require.NoError(t, err)
	location, err := chromedp.Run(bounded(t, ctx), chromedp.Location())
	require.NoError(t, err)
	require.NotContains(t, location, admin, "the token never goes into a URL")
	cookies, err := chromedp.Run(bounded(t, ctx), chromedp.Evaluate[string](`document.cookie`))
	require.NoError(t, err)
	require.NotContains(t, cookies, "pendinglink_session", "scripts cannot read the session cookie")

	// The page shows what the API reports (the demo has settled, so the
	// counts hold still).
	st, err := api.Status(t.Context())
	require.NoError(t, err)
	require.Positive(t, st.Links.Active)
	require.Equal(t, st.Links.Active, pageNumber(t, ctx, `[data-k="links.active"]`))
	require.Equal(t, st.Links.Total, pageNumber(t, ctx, `[data-k="links.total"]`))
	require.Equal(t, st.Events.Received, pageNumber(t, ctx, `[data-k="events.received"]`))
	require.Equal(t, st.Fans.Registered, pageNumber(t, ctx, `[data-k="fans.registered"]`))
	require.Equal(t, st.Fans.Valid, pageNumber(t, ctx, `[data-k="fans.valid"]`))
	q, err := api.Quota(t.Context())
	require.NoError(t, err)
	require.Equal(t, q.LivePendingIDs, pageNumber(t, ctx, `[data-q="live_pending_ids"]`))
	note, err := chromedp.Run(bounded(t, ctx), chromedp.Text(`#chart-events-note`))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(note, fmtThousands(st.Events.Received)+" in the last 24 h"), "chart note %q", note)
	screenshot("status-page.png", chromedp.FullScreenshot(100))

	// Search a linked fan and see its story.
	page, err := api.Links(t.Context(), apiclient.LinkFilter{Limit: 1})
	require.NoError(t, err)
	require.NotEmpty(t, page.Links)
	l := page.Links[0]
	require.NoError(t, chromedp.Do(bounded(t, ctx),
		chromedp.SendKeys(`#q`, l.UnionID),
		chromedp.Click(`#search button`),
		chromedp.WaitVisible(`#story-steps li`),
	))
	title, err := chromedp.Run(bounded(t, ctx), chromedp.Text(`#story-title`))
	require.NoError(t, err)
	require.Equal(t, "Story of "+l.UnionID, title)
	steps, err := chromedp.Run(bounded(t, ctx), chromedp.Text(`#story-steps`))
	require.NoError(t, err)
	require.Contains(t, steps, "fan "+l.UnionID+" registered with pendinglink")
	require.Contains(t, steps, fmt.Sprintf("linked fan %s to %s/%s", l.UnionID, l.CorpID, l.ExternalUserID))
	why, err := chromedp.Run(bounded(t, ctx), chromedp.Text(`#story-why`))
	require.NoError(t, err)
	if l.Active {
		require.Contains(t, why, "Linked: "+l.UnionID)
	} else {
		require.Contains(t, why, "Why not linked yet")
		require.Contains(t, why, "ended")
	}
	_, err = chromedp.Run(bounded(t, ctx), chromedp.Evaluate[bool](`document.getElementById('story').scrollIntoView(), true`))
	require.NoError(t, err)
	screenshot("status-story.png", chromedp.CaptureScreenshot())

	// A customer by corp and external_userid, then an id nobody knows.
	require.NoError(t, chromedp.Do(bounded(t, ctx),
		chromedp.SetValue(`#q`, l.CorpID+" "+l.ExternalUserID),
		chromedp.Click(`#search button`),
		chromedp.Poll[chromedp.Void](`document.getElementById('story-title').textContent === `+jsString("Story of "+l.CorpID+" "+l.ExternalUserID)),
	))
	parts, err := chromedp.Run(bounded(t, ctx), chromedp.Text(`#story-parts`))
	require.NoError(t, err)
	require.Contains(t, parts, "Customer "+l.CorpID+"/"+l.ExternalUserID)
	require.Contains(t, parts, "Fan "+l.UnionID)
	require.NoError(t, chromedp.Do(bounded(t, ctx),
		chromedp.SetValue(`#q`, "test-nobody"),
		chromedp.Click(`#search button`),
		chromedp.Poll[chromedp.Void](`document.getElementById('story-why').textContent === 'Nothing is known of it.'`),
	))
}

// fmtThousands writes n as the page does (en-US grouping).
func fmtThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string { return strconv.Quote(s) }
