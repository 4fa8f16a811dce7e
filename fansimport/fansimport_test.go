package fansimport

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
)

const fakeAdminToken = "test-admin-token-7f3a9c"

// fakeAdmin fakes the two endpoints the importer uses: it records accepted
// batches, skips fans it saw before, and registers queued fans as /v1/status
// is polled, so a test controls registrations without clocks.
type fakeAdmin struct {
	mu      sync.Mutex
	batches [][]store.FanInput // accepted batches, in order
	seen    map[store.FanInput]bool
	posts   int // POST attempts, failed ones included

	failFrom     int    // answer 500 to every POST from this attempt on (1-based); 0 never
	failNext     int    // answer 500 to this many POSTs, then recover
	rejectPrefix string // answer 400 "fan N: …" for a unionid with this prefix
	// onPost runs before a POST is handled and afterPost once it was
	// answered, with its attempt number.
	onPost    func(r *http.Request, attempt int)
	afterPost func(attempt int)

	registered      int64
	unregistered    int64 // queued, not yet registered
	registerPerPoll int64 // fans registered at each status call
	refuseAll       bool  // each status call drops the queued fans unregistered
	otherPending    int64 // jobs that are not ours, keeping the queue busy
	quota           []apiclient.QuotaWindow
	statusCalls     int
	forecast        *apiclient.QuotaResponse // GET /v1/quota; nil: 404 (an older server)
}

func (f *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+fakeAdminToken {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or invalid bearer token"})
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/fans/batch":
		f.postBatch(w, r)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/status":
		f.mu.Lock()
		defer f.mu.Unlock()
		f.statusCalls++
		step := min(f.registerPerPoll, f.unregistered)
		f.registered += step
		f.unregistered -= step
		if f.refuseAll {
			f.unregistered = 0
		}
		writeJSON(w, http.StatusOK, apiclient.StatusResponse{
			Fans:  apiclient.FansStatus{Registered: f.registered, Valid: f.registered},
			Queue: apiclient.QueueStatus{Pending: f.unregistered + f.otherPending},
			WeCom: apiclient.WeComStatus{Quota: f.quota},
		})
	case r.Method == http.MethodGet && r.URL.Path == "/v1/quota" && f.forecast != nil:
		f.mu.Lock()
		defer f.mu.Unlock()
		writeJSON(w, http.StatusOK, f.forecast)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	}
}

func (f *fakeAdmin) postBatch(w http.ResponseWriter, r *http.Request) {
	// Reading to EOF lets the server notice a client that hangs up (onPost waits for that).
	body, err := io.ReadAll(r.Body)
	var in []store.FanInput
	if err == nil {
		err = json.Unmarshal(body, &in)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid JSON body: " + err.Error()})
		return
	}
	f.mu.Lock()
	f.posts++
	attempt, hook, after := f.posts, f.onPost, f.afterPost
	f.mu.Unlock()
	if after != nil {
		defer after(attempt)
	}
	if hook != nil {
		hook(r, attempt)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if (f.failFrom > 0 && attempt >= f.failFrom) || f.failNext > 0 {
		f.failNext = max(f.failNext-1, 0)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
		return
	}
	if len(in) == 0 || len(in) > apiclient.MaxFansPerBatch {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "send between 1 and 1000 fans"})
		return
	}
	for i, fan := range in {
		if err := fan.Validate(); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("fan %d: %v", i, err)})
			return
		}
		if f.rejectPrefix != "" && strings.HasPrefix(fan.UnionID, f.rejectPrefix) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("fan %d: unionid is not one of ours", i)})
			return
		}
	}
	res := apiclient.BatchResponse{Accepted: len(in)}
	for _, fan := range in {
		if f.seen[fan] {
			res.Skipped++
			continue
		}
		f.seen[fan] = true
		f.unregistered++
		res.Queued++
	}
	f.batches = append(f.batches, in)
	writeJSON(w, http.StatusAccepted, res)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// set changes the fake under its lock.
func (f *fakeAdmin) set(fn func(f *fakeAdmin)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// acceptedBatches returns copies of the accepted batches.
func (f *fakeAdmin) acceptedBatches() [][]store.FanInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][]store.FanInput, len(f.batches))
	for i, b := range f.batches {
		out[i] = append([]store.FanInput(nil), b...)
	}
	return out
}

// acceptedFans flattens the accepted batches from index from on.
func (f *fakeAdmin) acceptedFans(from int) []store.FanInput {
	var out []store.FanInput
	for _, b := range f.acceptedBatches()[from:] {
		out = append(out, b...)
	}
	return out
}

type importBundle struct {
	fake *fakeAdmin
	srv  *httptest.Server
	dir  string
}

func setupImport(t *testing.T) *importBundle {
	t.Helper()
	fake := &fakeAdmin{seen: map[store.FanInput]bool{}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return &importBundle{fake: fake, srv: srv, dir: t.TempDir()}
}

// importTest runs fn as a parallel subtest with its own fake and folder.
func importTest(t *testing.T, name string, fn func(t *testing.T, b *importBundle)) {
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		fn(t, setupImport(t))
	})
}

// opts returns options for a fast, quiet run against the fake that does not
// wait for registrations.
func (b *importBundle) opts(file string, stdout *bytes.Buffer) Options {
	return Options{
		File: file, Server: b.srv.URL, Token: fakeAdminToken, Format: "auto", Stdout: stdout,
		PollEvery: time.Millisecond, LogEvery: time.Hour, RetryBase: time.Millisecond, Tries: 3,
	}
}

// write writes content to the file name in the bundle's folder and returns
// options for it (see opts) whose Stdout is out.
func (b *importBundle) write(t *testing.T, name, content string) (opts Options, out *bytes.Buffer) {
	t.Helper()
	out = new(bytes.Buffer)
	return b.opts(mustWriteFile(t, filepath.Join(b.dir, name), content), out), out
}

// run writes content to name (see write), lets edit change the options when
// it is not nil, and requires an import with them to succeed: the shape most
// tests share.
func (b *importBundle) run(t *testing.T, name, content string, edit func(*Options)) (opts Options, out *bytes.Buffer) {
	t.Helper()
	opts, out = b.write(t, name, content)
	if edit != nil {
		edit(&opts)
	}
	require.NoError(t, Run(t.Context(), opts))
	return opts, out
}

// testFans returns n fans whose ids carry prefix and their 1-based index.
func testFans(prefix string, n int) []store.FanInput {
	out := make([]store.FanInput, n)
	for i := range out {
		out[i] = store.FanInput{UnionID: fmt.Sprintf("test-%s-u%04d", prefix, i+1), OpenID: fmt.Sprintf("test-%s-o%04d", prefix, i+1)}
	}
	return out
}

func mustWriteFile(tb testing.TB, path, content string) string {
	tb.Helper()
	require.NoError(tb, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func csvLines(fans []store.FanInput) string {
	var sb strings.Builder
	for _, f := range fans {
		fmt.Fprintf(&sb, "%s,%s\n", f.UnionID, f.OpenID)
	}
	return sb.String()
}

func jsonLines(tb testing.TB, fans []store.FanInput) string {
	tb.Helper()
	var sb strings.Builder
	for _, f := range fans {
		line, err := json.Marshal(f)
		require.NoError(tb, err)
		sb.Write(line)
		sb.WriteByte('\n')
	}
	return sb.String()
}

func mustReadCheckpoint(tb testing.TB, file string) importCheckpoint {
	tb.Helper()
	cp, found, err := readCheckpoint(file + CheckpointSuffix)
	require.NoError(tb, err)
	require.True(tb, found)
	return cp
}

func TestRun_Input(t *testing.T) {
	t.Parallel()

	importTest(t, "CSVWithoutHeader", func(t *testing.T, b *importBundle) {
		fans := testFans("nohdr", 5)
		_, out := b.run(t, "fans.csv", csvLines(fans), func(o *Options) { o.Batch = 2 })
		require.Equal(t, fans, b.fake.acceptedFans(0))
		require.Len(t, b.fake.acceptedBatches(), 3)
		require.Contains(t, out.String(), "queued:      5\n")
	})

	importTest(t, "CSVWithHeaderMapsColumnsByName", func(t *testing.T, b *importBundle) {
		fans := testFans("hdr", 3)
		// A BOM, CRLF line ends, swapped and extra columns: what spreadsheets write.
		content := "\xEF\xBB\xBFOpenID,nickname,Union_ID\r\n"
		for _, f := range fans {
			content += f.OpenID + ",\"Doe, J\"," + f.UnionID + "\r\n"
		}
		_, out := b.run(t, "export.txt", content, nil)
		require.Equal(t, fans, b.fake.acceptedFans(0))
		require.Contains(t, out.String(), "invalid:     0 ")
	})

	importTest(t, "RejectedTokenNamesVariableNeverToken", func(t *testing.T, b *importBundle) {
		opts, out := b.write(t, "fans.csv", csvLines(testFans("tok", 3)))
		const wrong = "wrong-token-b4d1e8f2"
		opts.Token = wrong
		err := Run(t.Context(), opts)
		require.ErrorIs(t, err, ErrTokenRejected)
		require.Contains(t, err.Error(), "PENDINGLINK_ADMIN_TOKEN: rejected by the server")
		for _, s := range []string{err.Error(), out.String()} {
			require.NotContains(t, s, wrong)
		}
		require.Empty(t, b.fake.acceptedBatches())
	})
}

func TestFansImport(t *testing.T) {
	t.Parallel()

	importTest(t, "JSONLinesByExtension", func(t *testing.T, b *importBundle) {
		fans := testFans("jsonl", 4)
		_, out := b.run(t, "fans.jsonl", jsonLines(t, fans), nil)
		require.Equal(t, fans, b.fake.acceptedFans(0))
		require.Contains(t, out.String(), "(jsonl)")
	})

	importTest(t, "JSONLinesSniffedFromFirstLine", func(t *testing.T, b *importBundle) {
		fans := testFans("sniff", 2)
		b.run(t, "fans.export", "\n"+jsonLines(t, fans), nil)
		require.Equal(t, fans, b.fake.acceptedFans(0))
	})

	importTest(t, "JSONArrayIsRefusedWithAHint", func(t *testing.T, b *importBundle) {
		opts, _ := b.write(t, "fans.json", `[{"unionid":"a","openid":"b"}]`)
		err := Run(t.Context(), opts)
		require.ErrorContains(t, err, "jq -c")
		require.Empty(t, b.fake.acceptedBatches())
	})

	importTest(t, "InvalidRowsAreCountedReportedAndNotSent", func(t *testing.T, b *importBundle) {
		valid := testFans("valid", 4)
		long := strings.Repeat("x", maxFanIDLen+1)
		lines := []string{
			valid[0].UnionID + "," + valid[0].OpenID, // line 1
			"test-bad-u1,",                           // line 2: missing openid
			"test-bad-u2",                            // line 3: one column
			valid[1].UnionID + "," + valid[1].OpenID, // line 4
			long + ",test-bad-o3",                    // line 5: unionid too long
			`"test-bad-u4,test-bad-o4`,               // line 6: broken quote
			"",                                       // line 7: blank, ignored
			valid[2].UnionID + "," + valid[2].OpenID, // line 8
			strings.Repeat("y", maxLineLen+10),       // line 9: longer than a line may be
			valid[3].UnionID + "," + valid[3].OpenID, // line 10
		}
		opts, out := b.run(t, "fans.csv", strings.Join(lines, "\n")+"\n", nil)

		require.Equal(t, valid, b.fake.acceptedFans(0))
		s := out.String()
		require.Contains(t, s, "invalid:     5 (skipped, not sent)")
		require.Contains(t, s, "line 2: missing openid")
		require.Contains(t, s, "line 3: want 2 columns")
		require.Contains(t, s, "line 5: unionid is 129 bytes, over 128")
		require.Contains(t, s, "line 6: bad CSV")
		require.Contains(t, s, "line 9: line longer than 65536 bytes")
		require.Contains(t, s, "lines read:  10\n")
		require.Equal(t, int64(10), mustReadCheckpoint(t, opts.File).LinesDone)
	})

	importTest(t, "InvalidRowsShowFirstTwenty", func(t *testing.T, b *importBundle) {
		content := strings.Repeat(`{"unionid":"test-only-unionid"}`+"\n", 25) + jsonLines(t, testFans("last", 1))
		_, out := b.run(t, "fans.ndjson", content, nil)
		s := out.String()
		require.Contains(t, s, "first 20 of 25")
		require.Equal(t, 20, strings.Count(s, ": missing openid\n"))
		require.Contains(t, s, "line 20: missing openid")
		require.NotContains(t, s, "line 21:")
		require.Equal(t, testFans("last", 1), b.fake.acceptedFans(0))
	})

	importTest(t, "BatchesHoldAtMostBatchFans", func(t *testing.T, b *importBundle) {
		fans := testFans("batch", 25)
		b.run(t, "fans.csv", "unionid,openid\n"+csvLines(fans), func(o *Options) { o.Batch = 10 })
		var sizes []int
		for _, batch := range b.fake.acceptedBatches() {
			sizes = append(sizes, len(batch))
		}
		require.Equal(t, []int{10, 10, 5}, sizes)
		require.Equal(t, fans, b.fake.acceptedFans(0))
	})

	importTest(t, "TransientServerErrorsAreRetried", func(t *testing.T, b *importBundle) {
		b.fake.set(func(f *fakeAdmin) { f.failNext = 2 })
		fans := testFans("retry", 3)
		_, out := b.run(t, "fans.csv", csvLines(fans), nil)
		require.Equal(t, fans, b.fake.acceptedFans(0))
		require.Equal(t, 2, strings.Count(out.String(), "HTTP 500: internal error; try"))
	})

	importTest(t, "ResumesAfterFailureWithoutResending", func(t *testing.T, b *importBundle) {
		b.fake.set(func(f *fakeAdmin) { f.failFrom = 3 })
		fans := testFans("resume", 50)
		opts, out := b.write(t, "fans.csv", "unionid,openid\n"+csvLines(fans))
		opts.Batch = 10

		// Run 1: batches 1 and 2 are acknowledged, batch 3 fails on every try.
		err := Run(t.Context(), opts)
		require.ErrorContains(t, err, "gave up after 3 tries")
		require.ErrorContains(t, err, "HTTP 500")
		require.Equal(t, fans[:20], b.fake.acceptedFans(0))
		require.Equal(t, int64(21), mustReadCheckpoint(t, opts.File).LinesDone) // header + 20 fans
		require.Contains(t, out.String(), "lines 1-21 of 51 acknowledged")

		// Run 2: a healthy server gets only the rest, each fan once.
		b.fake.set(func(f *fakeAdmin) { f.failFrom = 0 })
		out.Reset()
		require.NoError(t, Run(t.Context(), opts))
		require.Equal(t, fans[20:], b.fake.acceptedFans(2))
		require.Equal(t, fans, b.fake.acceptedFans(0))
		require.Contains(t, out.String(), "resumed:     after line 21")
		require.Contains(t, out.String(), "skipped:     0 ")
		require.Equal(t, int64(51), mustReadCheckpoint(t, opts.File).LinesDone)
	})

	importTest(t, "CompletedImportSendsNothingAgain", func(t *testing.T, b *importBundle) {
		opts, out := b.run(t, "fans.csv", csvLines(testFans("done", 5)), nil)
		out.Reset()
		require.NoError(t, Run(t.Context(), opts))
		require.Len(t, b.fake.acceptedBatches(), 1)
		require.Contains(t, out.String(), "sent:        0\n")
	})

	importTest(t, "RestartIgnoresCheckpointAndServerSkips", func(t *testing.T, b *importBundle) {
		fans := testFans("restart", 5)
		opts, out := b.run(t, "fans.csv", csvLines(fans), nil)
		out.Reset()
		opts.Restart = true
		require.NoError(t, Run(t.Context(), opts))
		require.Equal(t, append(append([]store.FanInput(nil), fans...), fans...), b.fake.acceptedFans(0))
		require.Contains(t, out.String(), "skipped:     5 already registered or queued")
		require.NotContains(t, out.String(), "resumed:")
	})

	importTest(t, "DifferentFileWithSameNameInvalidatesCheckpoint", func(t *testing.T, b *importBundle) {
		b.fake.set(func(f *fakeAdmin) { f.failFrom = 2 })
		opts, out := b.write(t, "fans.csv", csvLines(testFans("first", 20)))
		opts.Batch = 10
		require.Error(t, Run(t.Context(), opts))
		require.Equal(t, int64(10), mustReadCheckpoint(t, opts.File).LinesDone)

		// Same name, same size, other fans.
		second := testFans("other", 20)
		mustWriteFile(t, opts.File, csvLines(second))
		b.fake.set(func(f *fakeAdmin) { f.failFrom = 0 })
		out.Reset()
		require.NoError(t, Run(t.Context(), opts))
		require.Contains(t, out.String(), "is for a different file")
		require.Equal(t, second, b.fake.acceptedFans(1))
	})

	importTest(t, "ServerRejectedRowIsReportedRestSent", func(t *testing.T, b *importBundle) {
		b.fake.set(func(f *fakeAdmin) { f.rejectPrefix = "test-srvbad" })
		fans := testFans("ok", 3)
		content := csvLines(fans[:1]) + "test-srvbad-u1,test-srvbad-o1\n" + csvLines(fans[1:])
		_, out := b.run(t, "fans.csv", content, nil)
		require.Equal(t, fans, b.fake.acceptedFans(0))
		require.Contains(t, out.String(), "line 2: rejected by the server: unionid is not one of ours")
	})

	importTest(t, "InterruptStopsAfterCheckpoint", func(t *testing.T, b *importBundle) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		// The third batch is in flight when the user presses Ctrl-C.
		third := make(chan struct{})
		b.fake.set(func(f *fakeAdmin) {
			f.onPost = func(r *http.Request, attempt int) {
				if attempt == 3 {
					cancel()
					<-r.Context().Done()
				}
			}
			f.afterPost = func(attempt int) {
				if attempt == 3 {
					close(third)
				}
			}
		})
		fans := testFans("intr", 30)
		opts, out := b.write(t, "fans.csv", csvLines(fans))
		opts.Batch = 10
		err := Run(ctx, opts)
		require.ErrorContains(t, err, "interrupted; lines 1-20 are acknowledged")
		require.Equal(t, int64(20), mustReadCheckpoint(t, opts.File).LinesDone)
		require.Contains(t, out.String(), "fans import summary")

		// The fake stored batch 3 although its answer never arrived, as a
		// real server may: the next run sends it again and the server skips it.
		<-third
		require.Equal(t, fans, b.fake.acceptedFans(0))
		b.fake.set(func(f *fakeAdmin) { f.onPost, f.afterPost = nil, nil })
		out.Reset()
		require.NoError(t, Run(t.Context(), opts))
		require.Equal(t, fans[20:], b.fake.acceptedFans(3))
		require.Contains(t, out.String(), "skipped:     10 already registered or queued")
	})

	importTest(t, "WaitEndsWhenRegisteredReachesQueued", func(t *testing.T, b *importBundle) {
		// Other jobs keep the queue busy, so only our registrations can end the wait.
		b.fake.set(func(f *fakeAdmin) { f.registered, f.registerPerPoll, f.otherPending = 100, 3, 5 })
		_, out := b.run(t, "fans.csv", csvLines(testFans("wait", 10)), func(o *Options) { o.Wait = true })
		// One baseline call, then polls reaching 3, 6, 9 and 10 registered.
		b.fake.set(func(f *fakeAdmin) { require.Equal(t, 5, f.statusCalls) })
		require.Contains(t, out.String(), "registered 10/10")
		require.Contains(t, out.String(), "registered:  10 during this run")
	})

	importTest(t, "WaitEndsWhenQueueDrains", func(t *testing.T, b *importBundle) {
		b.fake.set(func(f *fakeAdmin) { f.refuseAll = true })
		_, out := b.run(t, "fans.csv", csvLines(testFans("drain", 4)), func(o *Options) { o.Wait = true })
		require.Contains(t, out.String(), "4 queued fans were not registered")
	})

	importTest(t, "BarDrawsBothPhases", func(t *testing.T, b *importBundle) {
		b.fake.set(func(f *fakeAdmin) { f.registerPerPoll = 2 })
		_, out := b.run(t, "fans.csv", csvLines(testFans("bar", 6)), func(o *Options) { o.Wait, o.Bar, o.Batch = true, true, 2 })
		require.Contains(t, out.String(), "submitting")
		require.Contains(t, out.String(), "registering")
		require.Contains(t, out.String(), "registered:  6 during this run")
	})
}

func TestWaitETA(t *testing.T) {
	t.Parallel()

	// WeCom's unionid_to_pending_id windows as /v1/status shows them.
	wecomQuota := func(usedHour int64) []quota.Usage {
		return quotaUsage([]apiclient.QuotaWindow{
			{Window: "1h0m0s", Used: usedHour, Limit: 100_000},
			{Window: "24h0m0s", Used: usedHour, Limit: 480_000},
			{Window: "744h0m0s", Used: usedHour, Limit: 7_500_000},
		})
	}

	t.Run("QuotaRateIsStrictestWindow", func(t *testing.T) {
		t.Parallel()
		require.InDelta(t, 7_500_000.0/(744*3600), quota.Rate(wecomQuota(0)), 1e-9)
	})

	t.Run("SmallImportGoesAtObservedRate", func(t *testing.T) {
		t.Parallel()
		// 1000 fans fit in every window's spare calls.
		require.Equal(t, 10*time.Second, waitETA(1000, 100, wecomQuota(0)))
	})

	t.Run("HourlyQuotaCapsObservedRate", func(t *testing.T) {
		t.Parallel()
		ws := quotaUsage([]apiclient.QuotaWindow{{Window: "1h0m0s", Limit: 3600}})
		// 7200 at 10/s would take 12 min; 3600 go at once, the rest at 1/s.
		require.Equal(t, time.Hour, waitETA(7200, 10, ws))
	})

	t.Run("DailyQuotaCapsLargeImport", func(t *testing.T) {
		t.Parallel()
		// Past the 480,000 a day allows, the rest goes at 480,000 per 24 h.
		require.Equal(t, 26*time.Hour, waitETA(1_000_000, 1000, wecomQuota(0)))
	})

	t.Run("UsedCallsLeaveLessSpare", func(t *testing.T) {
		t.Parallel()
		ws := quotaUsage([]apiclient.QuotaWindow{{Window: "1h0m0s", Used: 3600, Limit: 3600}})
		require.Equal(t, time.Hour, waitETA(3600, 100, ws))
	})

	t.Run("UnknownBeforeAnyRegistration", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, time.Duration(-1), waitETA(100, 0, wecomQuota(0)))
		require.Equal(t, time.Duration(0), waitETA(0, 0, nil))
	})

	t.Run("ObservedRateFromSamples", func(t *testing.T) {
		t.Parallel()
		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		s := []rateSample{{t0, 100}, {t0.Add(5 * time.Second), 110}, {t0.Add(10 * time.Second), 120}}
		require.InDelta(t, 2.0, observedRate(s), 1e-9)
		require.Zero(t, observedRate(s[:1]))
	})
}

func TestFansImport_Forecast(t *testing.T) {
	t.Parallel()
	forecast := func(live, sustainable int64) *apiclient.QuotaResponse {
		return &apiclient.QuotaResponse{
			APIs: []apiclient.QuotaAPI{{API: "corpgroup/unionid_to_pending_id",
				Windows: []apiclient.QuotaWindow{{Window: "1h0m0s", Used: 10, Limit: 10}}}},
			LivePendingIDs: live, SustainableLiveFans: sustainable,
			Registrations: []apiclient.QuotaBacklog{{Name: "bulk", Count: 10}},
		}
	}

	importTest(t, "PrintsWhenTheQuotaLetsTheFileFinish", func(t *testing.T, b *importBundle) {
		b.fake.set(func(f *fakeAdmin) { f.forecast = forecast(0, 1000) })
		_, out := b.run(t, "fans.csv", csvLines(testFans("test-f", 20)), nil)
		require.Contains(t, out.String(), "forecast: up to 20 fans; with 10 registrations queued ahead, the quota lets the last be registered within 3h0m0s",
			"30 calls at 10 an hour, the hour spent")
	})

	importTest(t, "OverCapacityNeedsYes", func(t *testing.T, b *importBundle) {
		b.fake.set(func(f *fakeAdmin) { f.forecast = forecast(990, 1000) })
		opts, out := b.write(t, "fans.csv", csvLines(testFans("test-f", 20)))
		require.ErrorIs(t, Run(t.Context(), opts), ErrOverCapacity)
		require.Empty(t, b.fake.acceptedBatches(), "nothing sent")
		require.Contains(t, out.String(), "990 live and up to 20 new fans exceed the 1000 the quota keeps live")

		opts.Yes = true
		require.NoError(t, Run(t.Context(), opts))
		require.Len(t, b.fake.acceptedFans(0), 20)
	})

	importTest(t, "OlderServerWithoutForecast", func(t *testing.T, b *importBundle) {
		_, out := b.run(t, "fans.csv", csvLines(testFans("test-f", 5)), nil)
		require.Contains(t, out.String(), "forecast: the server has no /v1/quota")
	})
}

func TestRun_PriorityColumn(t *testing.T) {
	t.Parallel()
	b := setupImport(t)
	_, out := b.run(t, "fans.csv", "openid,priority,unionid\no-1,90,test-u1\no-2,,test-u2\no-3,high,test-u3\no-4,101,test-u4\n", nil)
	require.Equal(t, []store.FanInput{{UnionID: "test-u1", OpenID: "o-1", Priority: 90}, {UnionID: "test-u2", OpenID: "o-2"}},
		b.fake.acceptedFans(0))
	require.Contains(t, out.String(), `priority "high" is not a whole number`)
	require.Contains(t, out.String(), "priority must be from 1 to 100")
}

func TestRun_LastActiveColumn(t *testing.T) {
	t.Parallel()
	active := time.Date(2026, 2, 27, 10, 0, 0, 0, time.UTC)
	want := []store.FanInput{{UnionID: "test-u1", OpenID: "o-1", Priority: 90, LastActive: active}, {UnionID: "test-u2", OpenID: "o-2"}}

	importTest(t, "CSV", func(t *testing.T, b *importBundle) {
		_, out := b.run(t, "fans.csv", "openid,Last Active At,unionid,priority\n"+
			"o-1,2026-02-27T18:00:00+08:00,test-u1,90\no-2,,test-u2,\no-3,yesterday,test-u3,\no-4,2999-01-01T00:00:00Z,test-u4,\n", nil)
		got := b.fake.acceptedFans(0)
		require.Len(t, got, 2)
		require.True(t, got[0].LastActive.Equal(active), "sent as given: %v", got[0].LastActive)
		got[0].LastActive = active
		require.Equal(t, want, got)
		require.Contains(t, out.String(), `last_active_at "yesterday" is not an RFC 3339 time`)
		require.Contains(t, out.String(), "last_active_at must not be in the future")
	})

	importTest(t, "JSONLines", func(t *testing.T, b *importBundle) {
		_, out := b.run(t, "fans.jsonl", `{"unionid":"test-u1","openid":"o-1","priority":90,"last_active_at":"2026-02-27T10:00:00Z"}`+"\n"+
			`{"unionid":"test-u2","openid":"o-2"}`+"\n"+`{"unionid":"test-u3","openid":"o-3","last_active_at":"2026-02-31"}`+"\n", nil)
		require.Equal(t, want, b.fake.acceptedFans(0))
		require.Contains(t, out.String(), "line 3")
	})
}
