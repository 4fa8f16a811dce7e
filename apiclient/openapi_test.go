package apiclient_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"
	"unicode"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/apiclient/openapitest"
	"github.com/pendinglink/pendinglink/store"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestClient_FollowsTheDocument calls every method of Client, with every
// parameter set, and requires its request to reach the operation of the
// document named after the method (Status: "status") and to be valid there.
func TestClient_FollowsTheDocument(t *testing.T) {
	t.Parallel()
	v := openapitest.MustNew(t)
	var reached string
	c := &apiclient.Client{BaseURL: "http://pendinglink.test", Token: testToken, HTTPClient: &http.Client{
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			var body []byte
			if r.Body != nil {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					return nil, err
				}
				body = b
			}
			op, err := v.CheckRequest(r.Context(), r, body)
			reached = op
			if err != nil {
				return nil, err
			}
			return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(bytes.NewReader([]byte(`{}`))), Request: r}, nil
		}),
	}}

	ctx := context.Background()
	when := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	fan := store.FanInput{UnionID: "test-u1", OpenID: "o-test-u1", Priority: 80, LastActive: when.Add(-24 * time.Hour)}
	retry := apiclient.RetryRequest{Reason: "48002", Since: when, Until: when.Add(time.Hour), DryRun: true}
	calls := map[string]func() error{
		"Status":      func() error { _, err := c.Status(ctx); return err },
		"RegisterFan": func() error { _, _, err := c.RegisterFan(ctx, fan); return err },
		"RegisterFans": func() error {
			_, err := c.RegisterFans(ctx, []store.FanInput{fan, {UnionID: "test-u2", OpenID: "o-2"}})
			return err
		},
		"Fan": func() error { _, err := c.Fan(ctx, "test-u1"); return err },
		"UpdateFan": func() error {
			_, err := c.UpdateFan(ctx, "test-u1", apiclient.FanPatch{Priority: new(100), LastActiveAt: new(when.Add(-time.Hour))})
			return err
		},
		"Links": func() error {
			_, err := c.Links(ctx, apiclient.LinkFilter{UnionID: "test-u1", CorpID: "wwtest", ExternalUserID: "wm1",
				Since: when, Limit: 1000, Cursor: "42"})
			return err
		},
		"Customer":    func() error { _, err := c.Customer(ctx, "wwtest", "wm1"); return err },
		"Quota":       func() error { _, err := c.Quota(ctx); return err },
		"Reconcile":   func() error { _, err := c.Reconcile(ctx, when); return err },
		"RetryEvents": func() error { r := retry; r.State = "unmatched"; _, err := c.RetryEvents(ctx, r); return err },
		"RetryFans":   func() error { _, err := c.RetryFans(ctx, retry); return err },
		"Story":       func() error { _, err := c.Story(ctx, apiclient.StoryQuery{UnionID: "test-u1"}); return err },
		"Activity":    func() error { _, err := c.Activity(ctx, 168); return err },
	}
	typ := reflect.TypeFor[*apiclient.Client]()
	for i := range typ.NumMethod() {
		require.Contains(t, calls, typ.Method(i).Name, "a method of Client this test does not call")
	}
	for name, call := range calls {
		reached = ""
		require.NoError(t, call(), name)
		want := string(unicode.ToLower(rune(name[0]))) + name[1:]
		require.Equal(t, want, reached, "%s reaches operation %q", name, reached)
	}

	// The zero-valued optional bodies are valid too.
	_, err := c.Reconcile(ctx, time.Time{})
	require.NoError(t, err)
	_, err = c.RetryEvents(ctx, apiclient.RetryRequest{})
	require.NoError(t, err)
	_, err = c.Story(ctx, apiclient.StoryQuery{CorpID: "wwtest", ExternalUserID: "wm1"})
	require.NoError(t, err, "the customer's form of Story")
	_, err = c.Activity(ctx, 0)
	require.NoError(t, err)
	_, err = c.RetryFans(ctx, apiclient.RetryRequest{State: "failed"})
	require.ErrorContains(t, err, "state", "fans take no state: the document refuses it, as the server does")
}
