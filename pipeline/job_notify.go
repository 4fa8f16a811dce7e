package pipeline

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/pendinglink/pendinglink/store"
)

// Webhook posts link notifications to the brand's systems.
type Webhook struct {
	// URL receives a POST per notification. Required.
	URL string
	// Secret signs each body: X-Pendinglink-Signature: sha256=<hex HMAC>.
	Secret string
	// Client defaults to a client with a 10 s timeout that does not follow
	// redirects.
	Client *http.Client
}

// SignatureHeader carries the HMAC-SHA256 of the body, hex encoded, after "sha256=".
const SignatureHeader = "X-Pendinglink-Signature"

// DeliveryHeader carries the notification's idempotency id (also in the body).
const DeliveryHeader = "X-Pendinglink-Delivery"

// Sign returns the signature header value for body.
func (w *Webhook) Sign(body []byte) string {
	m := hmac.New(sha256.New, []byte(w.Secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Notification is the JSON body of a webhook delivery.
type Notification struct {
	// ID is the idempotency id: a retry repeats it.
	ID string `json:"id"`
	// Type is "link_created" or "link_ended".
	Type       string     `json:"type"`
	OccurredAt time.Time  `json:"occurred_at"`
	Link       store.Link `json:"link"`
}

// DeliveryID is the idempotency id of an outbox item.
func DeliveryID(item *store.OutboxItem) string { return "pl-" + strconv.FormatInt(item.ID, 10) }

// NewNotification builds the webhook body of an outbox item.
func NewNotification(item *store.OutboxItem) Notification {
	return Notification{ID: DeliveryID(item), Type: item.Kind, OccurredAt: item.OccurredAt, Link: item.Link}
}

// TypeTest is the Type of the delivery SendTest makes.
const TypeTest = "test"

// SendTest posts one signed notification of type TypeTest, with an empty
// link, exactly as real deliveries are posted, so that `pendinglink check`
// proves the URL answers 2xx and accepts the signature. A receiver should
// acknowledge it and otherwise ignore it.
func (w *Webhook) SendTest(ctx context.Context, now time.Time) error {
	n := Notification{ID: "pl-test-" + strconv.FormatInt(now.UnixNano(), 10), Type: TypeTest, OccurredAt: now.UTC()}
	return w.deliver(ctx, n)
}

func (w *Webhook) post(ctx context.Context, item *store.OutboxItem) error {
	return w.deliver(ctx, NewNotification(item))
}

// deliver posts n, signed, and wants a 2xx.
func (w *Webhook) deliver(ctx context.Context, n Notification) error {
	body, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("webhook: encode notification %s: %w", n.ID, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(DeliveryHeader, n.ID)
	req.Header.Set(SignatureHeader, w.Sign(body))
	client := w.Client
	if client == nil {
		client = &http.Client{
			Timeout: 10 * time.Second,
			// Following a 301/302/303 re-sends the POST as a bodiless GET,
			// whose 2xx would count as delivered: a 3xx is a failure instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			// *url.Error repeats the URL, which may carry credentials.
			err = ue.Unwrap()
		}
		return fmt.Errorf("webhook: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook: status %s", strconv.Itoa(resp.StatusCode))
	}
	return nil
}

// notifyLease is how long a sender holds a link's next notification: longer
// than one delivery (the webhook client times out after 10 s). A sender
// that dies holding it delays the link by at most this much.
const notifyLease = 30 * time.Second

// notifyWorker delivers a link's notifications in order, across processes:
// it claims the link's oldest undelivered notification in the database,
// delivers it, marks it, and goes on to the next, stopping at the first
// failure so a later one never overtakes it (River retries with backoff).
// A job that finds the head claimed by another sender waits out the lease:
// that sender delivers everything pending, and this job then finds nothing.
//
// Jobs of one process for the same link also take a per-link lock first,
// so they wait for each other rather than snooze on their own claim.
type notifyWorker struct {
	river.WorkerDefaults[NotifyArgs]
	cfg   Config
	store notifyStore
	mu    sync.Mutex
	locks map[int64]*linkLock
}

type linkLock struct {
	sync.Mutex
	users int
}

func (w *notifyWorker) lock(linkID int64) func() {
	w.mu.Lock()
	l := w.locks[linkID]
	if l == nil {
		l = &linkLock{}
		w.locks[linkID] = l
	}
	l.users++
	w.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		w.mu.Lock()
		if l.users--; l.users == 0 {
			delete(w.locks, linkID)
		}
		w.mu.Unlock()
	}
}

type notifyStore interface {
	// ClaimOutbox claims the oldest undelivered notification of a link:
	// store.ErrNotFound when none is pending, store.ErrClaimed while
	// another sender holds it.
	ClaimOutbox(ctx context.Context, linkID int64, lease time.Duration) (*store.OutboxItem, error)
	// MarkOutbox records a delivery attempt and ends the claim; errMsg ==
	// "" means delivered.
	MarkOutbox(ctx context.Context, item *store.OutboxItem, errMsg string) error
}

func newNotifyWorker(cfg Config, st notifyStore) *notifyWorker {
	return &notifyWorker{cfg: cfg, store: st, locks: map[int64]*linkLock{}}
}

func (w *notifyWorker) Work(ctx context.Context, job *river.Job[NotifyArgs]) error {
	if w.cfg.Webhook == nil {
		return nil
	}
	defer w.lock(job.Args.LinkID)()
	for {
		item, err := w.store.ClaimOutbox(ctx, job.Args.LinkID, notifyLease)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil
		case errors.Is(err, store.ErrClaimed):
			return river.JobSnooze(notifyLease)
		case err != nil:
			return err
		}
		// A delivery must end inside its lease, or another sender could
		// take the row while this one still posts it.
		pctx, cancel := context.WithTimeout(ctx, notifyLease*2/3)
		err = w.cfg.Webhook.post(pctx, item)
		cancel()
		if err != nil {
			if merr := w.store.MarkOutbox(ctx, item, err.Error()); merr != nil {
				w.cfg.Logger.Error("record webhook failure", "err", merr)
			}
			return err
		}
		if err := w.store.MarkOutbox(ctx, item, ""); err != nil {
			return err
		}
	}
}
