// Package apiclient is the /v1 API of pendinglink as Go: the wire types the
// server answers with and a typed Client. The fans import, the demo and the
// end-to-end tests use it, so no command needs the server's packages to
// talk to a server.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pendinglink/pendinglink/store"
)

// maxAnswer bounds how much of an answer is read; a page of 1,000 links is
// far smaller.
const maxAnswer = 4 << 20

// Client calls a pendinglink server's /v1 routes with the admin token. Its
// fields must not change while it is in use; it is safe for concurrent use.
//
// A server's refusal is an *Error. A failure to get an answer at all is a
// *url.Error (never holding the token, which travels in a header only).
type Client struct {
	// BaseURL is the server, e.g. "http://127.0.0.1:8080". Required.
	BaseURL string
	// Token is PENDINGLINK_ADMIN_TOKEN. Required.
	Token string
	// HTTPClient sends the requests. Defaults to http.DefaultClient.
	HTTPClient *http.Client
}

// Error is an answer other than 2xx: its status and the server's
// {"error": "…"} message, or the start of the body when it has none.
type Error struct {
	Status  int
	Message string
}

// Error returns a message like "HTTP 400: limit: must be an integer from 1 to 1000".
func (e *Error) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message) }

// StatusCode returns the HTTP status of err's *Error, or 0 if err holds none.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Status returns GET /v1/status.
func (c *Client) Status(ctx context.Context) (StatusResponse, error) {
	var st StatusResponse
	_, err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// RegisterFan posts one fan to /v1/fans. The status says what happened: 201
// registered now, 202 queued, 200 already registered.
func (c *Client) RegisterFan(ctx context.Context, fan store.FanInput) (FanResponse, int, error) {
	var fr FanResponse
	code, err := c.do(ctx, http.MethodPost, "/v1/fans", fan, &fr)
	return fr, code, err
}

// RegisterFans queues up to MaxFansPerBatch fans with POST /v1/fans/batch.
// The server checks the size: a larger batch is a 400 *Error.
func (c *Client) RegisterFans(ctx context.Context, fans []store.FanInput) (BatchResponse, error) {
	var br BatchResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/fans/batch", fans, &br)
	return br, err
}

// Fan returns GET /v1/fans/{unionid}: a 404 *Error when it is unknown.
func (c *Client) Fan(ctx context.Context, unionID string) (FanResponse, error) {
	var fr FanResponse
	_, err := c.do(ctx, http.MethodGet, "/v1/fans/"+url.PathEscape(unionID), nil, &fr)
	return fr, err
}

// LinkFilter selects links for Links. Zero fields do not filter.
type LinkFilter struct {
	UnionID        string
	CorpID         string
	ExternalUserID string
	// Since keeps links made at or after it.
	Since time.Time
	// Limit is the page size, 1 to 1000. Defaults to the server's 100.
	Limit int
	// Cursor is the NextCursor of the previous page.
	Cursor string
}

func (f LinkFilter) query() string {
	q := url.Values{}
	for k, v := range map[string]string{"unionid": f.UnionID, "corp_id": f.CorpID, "external_userid": f.ExternalUserID, "cursor": f.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.Format(time.RFC3339))
	}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// Links returns one page of GET /v1/links, newest first.
func (c *Client) Links(ctx context.Context, f LinkFilter) (LinksResponse, error) {
	var lr LinksResponse
	_, err := c.do(ctx, http.MethodGet, "/v1/links"+f.query(), nil, &lr)
	return lr, err
}

// Customer returns GET /v1/customers/{corp_id}/{external_userid}: a 404
// *Error when the dealer's customer is unknown.
func (c *Client) Customer(ctx context.Context, corpID, externalUserID string) (store.CustomerDetail, error) {
	var cd store.CustomerDetail
	_, err := c.do(ctx, http.MethodGet, "/v1/customers/"+url.PathEscape(corpID)+"/"+url.PathEscape(externalUserID), nil, &cd)
	return cd, err
}

// UpdateFan changes a fan's priority, last-active time or both with PATCH
// /v1/fans/{unionid}.
func (c *Client) UpdateFan(ctx context.Context, unionID string, patch FanPatch) (FanResponse, error) {
	var fr FanResponse
	_, err := c.do(ctx, http.MethodPatch, "/v1/fans/"+url.PathEscape(unionID), patch, &fr)
	return fr, err
}

// Quota returns GET /v1/quota.
func (c *Client) Quota(ctx context.Context) (QuotaResponse, error) {
	var q QuotaResponse
	_, err := c.do(ctx, http.MethodGet, "/v1/quota", nil, &q)
	return q, err
}

// Reconcile starts a reconcile sweep with POST /v1/reconcile of the fans
// registered before registeredBefore (zero: now); a sweep already running
// is returned with Started false.
func (c *Client) Reconcile(ctx context.Context, registeredBefore time.Time) (ReconcileResponse, error) {
	var rr ReconcileResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/reconcile", ReconcileRequest{RegisteredBefore: registeredBefore}, &rr)
	return rr, err
}

// RetryEvents re-drives failed (or, with State "unmatched", unmatched)
// events with POST /v1/events/retry.
func (c *Client) RetryEvents(ctx context.Context, r RetryRequest) (RetryResponse, error) {
	var out RetryResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/events/retry", r, &out)
	return out, err
}

// RetryFans re-queues failed fans with POST /v1/fans/retry.
func (c *Client) RetryFans(ctx context.Context, r RetryRequest) (RetryResponse, error) {
	var out RetryResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/fans/retry", r, &out)
	return out, err
}

// StoryQuery says whose story Story tells: a fan by UnionID, or a dealer's
// customer by CorpID and ExternalUserID. Set one of the two forms only.
type StoryQuery struct {
	UnionID        string
	CorpID         string
	ExternalUserID string
}

// Story returns GET /v1/story: what happened to a fan or a dealer's
// customer, and why no link of it is active. Nothing known of it is a 404
// *Error, and a query that does not set exactly one form a 400 *Error.
func (c *Client) Story(ctx context.Context, q StoryQuery) (store.Story, error) {
	v := url.Values{}
	for k, s := range map[string]string{"unionid": q.UnionID, "corp_id": q.CorpID, "external_userid": q.ExternalUserID} {
		if s != "" {
			v.Set(k, s)
		}
	}
	var s store.Story
	_, err := c.do(ctx, http.MethodGet, "/v1/story?"+v.Encode(), nil, &s)
	return s, err
}

// Activity returns GET /v1/activity: the events stored per minute and the
// links made per hour over the last hours (1 to 168; 0 asks for the
// server's default, 24).
func (c *Client) Activity(ctx context.Context, hours int) (store.Activity, error) {
	path := "/v1/activity"
	if hours != 0 {
		path += "?hours=" + strconv.Itoa(hours)
	}
	var a store.Activity
	_, err := c.do(ctx, http.MethodGet, path, nil, &a)
	return a, err
}

// do sends in as JSON (nil: no body), decodes a 2xx answer into out and
// returns the status.
func (c *Client) do(ctx context.Context, method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err // a *url.Error: method, URL and cause; the token is in no URL
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		// Like a failed Do: no usable answer arrived.
		return resp.StatusCode, &url.Error{Op: req.Method[:1] + strings.ToLower(req.Method[1:]), URL: req.URL.String(), Err: fmt.Errorf("read answer: %w", err)}
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, &Error{Status: resp.StatusCode, Message: answerMessage(data)}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: unexpected answer (is %s a pendinglink server?): %w", method, path, c.BaseURL, err)
	}
	return resp.StatusCode, nil
}

// answerMessage extracts {"error": …} from an error answer, or a short
// excerpt of anything else.
func answerMessage(data []byte) string {
	var e ErrorResponse
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(data))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
