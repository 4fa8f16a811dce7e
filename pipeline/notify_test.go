package pipeline_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/pipeline/pipelinetest"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

const testWebhookSecret = "test-webhook-secret"

// testNow is the fixed time of the pipeline tests' store and workers.
var testNow = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// delivery is one POST the webhook received.
type delivery struct {
	ID, Signature, ContentType string
	Body                       []byte
	Status                     int // what the webhook answered
}

// payload is the part of a notification body the tests read.
type payload struct {
	ID   string     `json:"id"`
	Type string     `json:"type"`
	Link store.Link `json:"link"`
}

func (d delivery) payload(t *testing.T) payload {
	t.Helper()
	var p payload
	require.NoError(t, json.Unmarshal(d.Body, &p))
	return p
}

// webhook is the brand's endpoint: it records every POST and answers
// Status(n) for the nth one (from 1), 204 by default.
type webhook struct {
	srv    *httptest.Server
	Status func(n int) int
	got    chan delivery

	mu  sync.Mutex
	all []delivery
}

func newWebhook(t *testing.T) *webhook {
	t.Helper()
	w := &webhook{got: make(chan delivery, 100)}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			rw.WriteHeader(http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		n := len(w.all) + 1
		status := http.StatusNoContent
		if w.Status != nil {
			status = w.Status(n)
		}
		d := delivery{
			ID: r.Header.Get(pipeline.DeliveryHeader), Signature: r.Header.Get(pipeline.SignatureHeader),
			ContentType: r.Header.Get("Content-Type"), Body: body, Status: status,
		}
		w.all = append(w.all, d)
		w.mu.Unlock()
		rw.WriteHeader(status)
		w.got <- d
	}))
	t.Cleanup(w.srv.Close)
	return w
}

// wait returns the next n deliveries.
func (w *webhook) wait(t *testing.T, n int) []delivery {
	t.Helper()
	var out []delivery
	for range n {
		select {
		case d := <-w.got:
			out = append(out, d)
		case <-time.After(30 * time.Second):
			t.Fatalf("webhook got %d of %d deliveries", len(out), n)
		}
	}
	return out
}

// All returns a copy of every delivery so far.
func (w *webhook) All() []delivery {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]delivery(nil), w.all...)
}

// notifyBundle is a store with Notify on whose River client works the
// pipeline's jobs, the notify worker posting to hook.
type notifyBundle struct {
	db     *store.DB
	events <-chan *river.Event
	seen   map[river.EventKind][]*river.Event
}

// setupHook is setupNotify with a webhook that posts to a new test
// webhook, which answers with status (nil: always 204).
func setupHook(t *testing.T, status func(n int) int) (*webhook, *notifyBundle) {
	t.Helper()
	hook := newWebhook(t)
	hook.Status = status
	return hook, setupNotify(t, &pipeline.Webhook{URL: hook.srv.URL, Secret: testWebhookSecret})
}

// failOn answers delivery n with status and every other delivery with 200.
func failOn(n, status int) func(int) int {
	return func(i int) int {
		if i == n {
			return status
		}
		return http.StatusOK
	}
}

func setupNotify(t *testing.T, wh *pipeline.Webhook) *notifyBundle {
	t.Helper()
	workers := river.NewWorkers()
	now := func() time.Time { return testNow }
	db := storetest.MustOpen(t, store.Config{
		Now: now, Jobs: pipeline.Policy{Notify: true}, Workers: workers,
		Queues: map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}},
		// SQLite has no LISTEN/NOTIFY: poll often so the test does not wait.
		FetchCooldown: 5 * time.Millisecond, FetchPollInterval: 10 * time.Millisecond,
	})
	fw := &pipelinetest.FakeWeCom{}
	co, err := pipeline.NewCoalescer(fw, pipeline.CoalescerConfig{})
	require.NoError(t, err)
	t.Cleanup(co.Close)
	pl, err := pipeline.New(pipeline.Config{Store: db, WeCom: fw, Coalescer: co, Webhook: wh, Now: now})
	require.NoError(t, err)
	pl.AddWorkers(workers)
	events, cancel := db.River().Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed)
	t.Cleanup(cancel)
	return &notifyBundle{db: db, events: events, seen: map[river.EventKind][]*river.Event{}}
}

func (b *notifyBundle) start(t *testing.T) {
	t.Helper()
	require.NoError(t, b.db.Start(t.Context()))
}

// waitJobs waits until n more notify jobs reached kind, and returns those
// events. Events of other kinds are kept for a later call: River reports a
// batch of outcomes in no particular order.
func (b *notifyBundle) waitJobs(t *testing.T, kind river.EventKind, n int) []*river.Event {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for len(b.seen[kind]) < n {
		select {
		case ev := <-b.events:
			b.seen[ev.Kind] = append(b.seen[ev.Kind], ev)
		case <-deadline:
			t.Fatalf("%d of %d notify jobs reached %s", len(b.seen[kind]), n, kind)
		}
	}
	out := b.seen[kind][:n]
	b.seen[kind] = b.seen[kind][n:]
	return out
}

// link creates the link test-u1 ⇄ wwtestcorp/wmtest1 (one link_created).
func (b *notifyBundle) link(t *testing.T) store.Link {
	t.Helper()
	_, err := b.db.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-u1", OpenID: "o-1"}}, store.RegisterOpts{NoJob: true})
	require.NoError(t, err)
	_, err = b.db.RecordFanPendingID(t.Context(), "test-u1", "p-1")
	require.NoError(t, err)
	links := storetest.Resolve(t, b.db, store.Resolution{CorpID: "wwtestcorp", ExternalUserID: "wmtest1", PendingID: "p-1"})
	require.Len(t, links, 1)
	return links[0]
}

// churn ends the link and adds the customer again: link_ended, link_created.
func (b *notifyBundle) churn(t *testing.T) {
	t.Helper()
	_, err := b.db.EndLinks(t.Context(), store.EndLink{CorpID: "wwtestcorp", ExternalUserID: "wmtest1"})
	require.NoError(t, err)
	links := storetest.Resolve(t, b.db, store.Resolution{CorpID: "wwtestcorp", ExternalUserID: "wmtest1", PendingID: "p-1"})
	require.Len(t, links, 1)
}

func (b *notifyBundle) undelivered(t *testing.T) int64 {
	t.Helper()
	var n int64
	require.NoError(t, b.db.SQL().QueryRowContext(t.Context(), `SELECT count(*) FROM outbox WHERE delivered_at IS NULL`).Scan(&n))
	return n
}

// deliverySeq is the outbox id in a delivery id ("pl-42").
func deliverySeq(t *testing.T, id string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimPrefix(id, "pl-"), 10, 64)
	require.NoError(t, err, id)
	return n
}

func sign(body []byte) string {
	m := hmac.New(sha256.New, []byte(testWebhookSecret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func TestWebhook_Sign(t *testing.T) {
	t.Parallel()
	w := &pipeline.Webhook{Secret: testWebhookSecret}
	body := []byte(`{"id":"pl-1"}`)
	require.Equal(t, sign(body), w.Sign(body))
	require.NotEqual(t, w.Sign(body), (&pipeline.Webhook{Secret: "other"}).Sign(body))
}

func TestWebhook_SendTest(t *testing.T) {
	t.Parallel()

	t.Run("SignedLikeARealDelivery", func(t *testing.T) {
		t.Parallel()
		got := make(chan delivery, 1)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			got <- delivery{ID: r.Header.Get(pipeline.DeliveryHeader), Signature: r.Header.Get(pipeline.SignatureHeader),
				ContentType: r.Header.Get("Content-Type"), Body: body}
			w.WriteHeader(http.StatusNoContent)
		}))
		t.Cleanup(srv.Close)
		w := &pipeline.Webhook{URL: srv.URL + "/hook", Secret: testWebhookSecret}
		require.NoError(t, w.SendTest(t.Context(), testNow))

		d := <-got
		require.Equal(t, sign(d.Body), d.Signature)
		require.Equal(t, "application/json", d.ContentType)
		p := d.payload(t)
		require.Equal(t, pipeline.TypeTest, p.Type)
		require.Equal(t, p.ID, d.ID)
		require.True(t, strings.HasPrefix(d.ID, "pl-test-"), d.ID)
	})

	t.Run("ErrNon2xx", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
		}))
		t.Cleanup(srv.Close)
		w := &pipeline.Webhook{URL: srv.URL, Secret: testWebhookSecret}
		require.ErrorContains(t, w.SendTest(t.Context(), testNow), "status 401")
	})
}

func TestNotifyWorker(t *testing.T) {
	t.Parallel()

	t.Run("SignsAndDeliversInOrder", func(t *testing.T) {
		t.Parallel()
		hook, b := setupHook(t, nil)
		l := b.link(t)
		b.churn(t)
		b.start(t)

		got := hook.wait(t, 3)
		b.waitJobs(t, river.EventKindJobCompleted, 3)
		require.Len(t, hook.All(), 3, "each notification is sent once")
		var types []string
		for i, d := range got {
			p := d.payload(t)
			types = append(types, p.Type)
			require.Equal(t, sign(d.Body), d.Signature, "HMAC-SHA256 of the body")
			require.Equal(t, "application/json", d.ContentType)
			require.Equal(t, p.ID, d.ID, "the delivery header repeats the body's id")
			require.True(t, strings.HasPrefix(d.ID, "pl-"), d.ID)
			require.Equal(t, l.ID, p.Link.ID)
			if i > 0 {
				require.Greater(t, deliverySeq(t, d.ID), deliverySeq(t, got[i-1].ID), "oldest first")
			}
		}
		require.Equal(t, []string{"link_created", "link_ended", "link_created"}, types)
		require.Zero(t, b.undelivered(t))
	})

	t.Run("StopsAtFirstFailureAndResumesInOrder", func(t *testing.T) {
		t.Parallel()
		// Ensure a failed notification is never overtaken: the job that saw
		// it fail sends nothing after it, and the next one starts from it.
		hook, b := setupHook(t, failOn(2, http.StatusInternalServerError))
		b.link(t)
		b.churn(t)
		b.start(t)

		got := hook.wait(t, 4)
		failed := b.waitJobs(t, river.EventKindJobFailed, 1)
		require.Contains(t, failed[0].Job.Errors[0].Error, "webhook: status 500")
		var seq []string
		for _, d := range got {
			seq = append(seq, d.payload(t).Type)
		}
		require.Equal(t, []string{"link_created", "link_ended", "link_ended", "link_created"}, seq)
		require.Equal(t, http.StatusInternalServerError, got[1].Status)
		require.Equal(t, got[1].ID, got[2].ID, "the retry is the same notification")
		require.Equal(t, got[1].Body, got[2].Body)
		b.waitJobs(t, river.EventKindJobCompleted, 2)
		require.Zero(t, b.undelivered(t))

		var attempts int
		require.NoError(t, b.db.SQL().QueryRowContext(t.Context(),
			`SELECT attempts FROM outbox WHERE kind = 'link_ended'`).Scan(&attempts))
		require.Equal(t, 2, attempts)
	})

	t.Run("RetriedJobResumesAtFailedNotification", func(t *testing.T) {
		t.Parallel()
		hook, b := setupHook(t, failOn(1, http.StatusServiceUnavailable))
		b.link(t)
		b.start(t)

		first := hook.wait(t, 1)[0]
		failed := b.waitJobs(t, river.EventKindJobFailed, 1)[0]
		var lastError string
		require.NoError(t, b.db.SQL().QueryRowContext(t.Context(), `SELECT last_error FROM outbox`).Scan(&lastError))
		require.Equal(t, "webhook: status 503", lastError)
		require.Equal(t, int64(1), b.undelivered(t))

		// Run River's next attempt now instead of after its backoff.
		_, err := b.db.River().JobRetry(t.Context(), failed.Job.ID)
		require.NoError(t, err)
		second := hook.wait(t, 1)[0]
		done := b.waitJobs(t, river.EventKindJobCompleted, 1)[0]
		require.Equal(t, failed.Job.ID, done.Job.ID)
		require.Equal(t, first.ID, second.ID)
		require.Equal(t, first.Body, second.Body)
		require.Equal(t, sign(second.Body), second.Signature)
		require.Zero(t, b.undelivered(t))
	})

	t.Run("ErrorsHideTheWebhookURL", func(t *testing.T) {
		t.Parallel()
		// Ensure a URL carrying a credential never reaches the outbox or River's job errors.
		closed := httptest.NewServer(http.NotFoundHandler())
		closed.Close()
		b := setupNotify(t, &pipeline.Webhook{URL: closed.URL + "/hook?token=hunter2", Secret: testWebhookSecret})
		b.link(t)
		b.start(t)

		failed := b.waitJobs(t, river.EventKindJobFailed, 1)[0]
		require.NotEmpty(t, failed.Job.Errors)
		require.NotContains(t, failed.Job.Errors[0].Error, "hunter2")
		var lastError string
		require.NoError(t, b.db.SQL().QueryRowContext(t.Context(), `SELECT last_error FROM outbox`).Scan(&lastError))
		require.NotEmpty(t, lastError)
		require.NotContains(t, lastError, "hunter2")
	})

	t.Run("RedirectIsNotDelivery", func(t *testing.T) {
		t.Parallel()
		// Ensure a 302 is a failure: following it would turn the POST into a
		// bodiless GET, and that GET's 200 is no delivery.
		var gets atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				http.Redirect(w, r, "/moved", http.StatusFound)
				return
			}
			gets.Add(1)
			w.WriteHeader(http.StatusOK)
		}))
		t.Cleanup(srv.Close)
		b := setupNotify(t, &pipeline.Webhook{URL: srv.URL, Secret: testWebhookSecret})
		b.link(t)
		b.start(t)

		failed := b.waitJobs(t, river.EventKindJobFailed, 1)[0]
		require.Contains(t, failed.Job.Errors[0].Error, "webhook: status 302")
		require.Zero(t, gets.Load(), "the redirect is not followed")
		require.Equal(t, int64(1), b.undelivered(t))
	})

	t.Run("NoWebhookSendsNothing", func(t *testing.T) {
		t.Parallel()
		b := setupNotify(t, nil)
		b.link(t)
		b.start(t)
		b.waitJobs(t, river.EventKindJobCompleted, 1)
		require.Equal(t, int64(1), b.undelivered(t), "kept in the outbox")
	})
}
