package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// uiRequest sends a request to the jobs UI with HTTP Basic credentials (a
// browser's way), none when password is "", and returns the answer.
func (w *e2eWorld) uiRequest(method, path, password string, body any, header http.Header) (*http.Response, []byte) {
	w.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(w.t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(w.t.Context(), method, w.url(path), rd)
	require.NoError(w.t, err)
	if password != "" {
		req.SetBasicAuth("admin", password)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := w.api.Do(req)
	require.NoError(w.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(w.t, err)
	return resp, b
}

// TestE2E_JobsUI: riverui, mounted at /riverui/ behind the admin token,
// lists a registration that WeCom refused and retries it, on both engines
// (River's riversqlite and riverdatabasesql drivers).
func TestE2E_JobsUI(t *testing.T) {
	t.Parallel()
	t.Run("SQLite", func(t *testing.T) {
		t.Parallel()
		testJobsUI(t, nil)
	})
	t.Run("PostgreSQL", func(t *testing.T) {
		t.Parallel()
		testJobsUI(t, map[string]string{"PENDINGLINK_DB": postgresForTest(t)})
	})
}

func testJobsUI(t *testing.T, env map[string]string) {
	w := startE2E(t, e2eOptions{Env: env})

	// A fan the fake WeCom does not know: its register job is cancelled
	// (610014). The registrar works the fans table, so the job is one an
	// earlier version would have queued; the legacy worker still works it.
	w.registerBatch([]wecomtest.Person{{UnionID: "test-unobody", OpenID: "o-unobody"}})
	_, err := w.db().River().Insert(t.Context(), pipeline.RegisterArgs{UnionID: "test-unobody", OpenID: "o-unobody"}, nil)
	require.NoError(t, err)
	kind := pipeline.RegisterArgs{}.Kind()
	var job *rivertype.JobRow
	w.waitFor("the refused registration's job cancelled", func() bool {
		jobs := w.jobs(kind, rivertype.JobStateCancelled)
		if len(jobs) == 1 {
			job = jobs[0]
		}
		return job != nil
	})

	t.Run("AdminTokenRequired", func(t *testing.T) {
		w := w.in(t)
		for _, password := range []string{"", "wrong-token-0123456789"} {
			resp, _ := w.uiRequest(http.MethodGet, "/riverui/api/jobs?state=cancelled", password, nil, nil)
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Basic", "a browser is asked for the token")
		}
		resp, _ := w.uiRequest(http.MethodGet, "/riverui/", "", nil, nil)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		code, body := w.do(http.MethodGet, "/riverui/api/jobs?state=cancelled", nil, true)
		require.Equal(t, http.StatusOK, code, "the bearer token of /v1 works too: %s", body)
	})

	t.Run("ServesTheUI", func(t *testing.T) {
		w := w.in(t)
		resp, body := w.uiRequest(http.MethodGet, "/riverui/", w.admin, nil, http.Header{"Accept": {"text/html"}})
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		require.Contains(t, resp.Header.Get("Content-Type"), "text/html")
		require.Contains(t, string(body), "/riverui/", "asset paths carry the prefix")
	})

	t.Run("ListsTheCancelledJob", func(t *testing.T) {
		w := w.in(t)
		resp, body := w.uiRequest(http.MethodGet, "/riverui/api/jobs?state=cancelled", w.admin, nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		var list struct {
			Data []struct {
				ID    int64  `json:"id"`
				Kind  string `json:"kind"`
				State string `json:"state"`
			} `json:"data"`
		}
		require.NoError(t, json.Unmarshal(body, &list), string(body))
		require.Len(t, list.Data, 1)
		require.Equal(t, job.ID, list.Data[0].ID)
		require.Equal(t, kind, list.Data[0].Kind)
		require.Equal(t, "cancelled", list.Data[0].State)
	})

	t.Run("SidebarEndpointsAnswer", func(t *testing.T) {
		// The UI's sidebar asks for state counts, queues and features on
		// every page: each must work on this engine's driver.
		w := w.in(t)
		for _, path := range []string{"/riverui/api/states", "/riverui/api/queues", "/riverui/api/features"} {
			resp, body := w.uiRequest(http.MethodGet, path, w.admin, nil, nil)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
		}
		resp, body := w.uiRequest(http.MethodGet, "/riverui/api/queues", w.admin, nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, string(body), `"`+pipeline.QueueRegister+`"`, "the queue the job ran on")
	})

	t.Run("CrossSiteChangeRefused", func(t *testing.T) {
		w := w.in(t)
		resp, body := w.uiRequest(http.MethodPost, "/riverui/api/jobs/retry", w.admin,
			map[string]any{"ids": []string{fmt.Sprint(job.ID)}}, http.Header{"Sec-Fetch-Site": {"cross-site"}})
		require.Equal(t, http.StatusForbidden, resp.StatusCode, string(body))
		require.Equal(t, rivertype.JobStateCancelled, w.jobs(kind, rivertype.JobStateCancelled)[0].State, "nothing retried")
	})

	// Last, as it changes the job.
	t.Run("RetriesTheJob", func(t *testing.T) {
		w := w.in(t)
		resp, body := w.uiRequest(http.MethodPost, "/riverui/api/jobs/retry", w.admin,
			map[string]any{"ids": []string{fmt.Sprint(job.ID)}}, http.Header{"Sec-Fetch-Site": {"same-origin"}})
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		// The job runs again: WeCom refuses the fan again, so it ends
		// cancelled after a second attempt.
		w.waitFor("the retried job's second attempt", func() bool {
			for _, j := range w.jobs(kind, rivertype.JobStateCancelled) {
				if j.ID == job.ID && j.Attempt == 2 {
					return true
				}
			}
			return false
		})
	})
}
