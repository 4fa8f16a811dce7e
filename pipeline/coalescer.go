package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/pendinglink/pendinglink/wecom"
)

// PendingResolver is the WeCom call the Coalescer batches
// (corpgroup/batch/external_userid_to_pending_id). *wecom.Client implements
// it. It returns at most one result per id; an id that is missing from the
// results or has PendingID "" has no pending_id.
type PendingResolver interface {
	ExternalUserIDToPendingID(ctx context.Context, corpID, chatID string, externalUserIDs []string) ([]wecom.PendingResult, error)
}

// ErrCoalescerClosed is returned by Coalescer.Resolve after Close.
var ErrCoalescerClosed = errors.New("pipeline: coalescer closed")

// Defaults for CoalescerConfig's zero fields.
const (
	// DefaultCoalescerWindow is short next to a WeCom call (tens of ms) and
	// long enough for a burst of River jobs to gather.
	DefaultCoalescerWindow = 50 * time.Millisecond
	// DefaultCoalescerMaxBatch is WeCom's limit per call (§4.5).
	DefaultCoalescerMaxBatch = wecom.MaxBatchIDs
	// DefaultCoalescerCallTimeout bounds one batch call.
	DefaultCoalescerCallTimeout = 30 * time.Second
)

// CoalescerConfig configures a Coalescer. Zero fields take their defaults.
type CoalescerConfig struct {
	// Window is how long the first ask in a (corp, chat) group waits for
	// company before the group is sent. Defaults to 50ms.
	Window time.Duration
	// MaxBatch is the most distinct ids sent in one call; a group is sent as
	// soon as it holds this many. Defaults to 100, WeCom's maximum; larger
	// values are an error.
	MaxBatch int
	// CallTimeout bounds one batch call. The call is detached from the
	// callers' contexts, since one caller giving up must not fail the others.
	// Defaults to 30s.
	CallTimeout time.Duration
	// Logger receives one debug line per call and a warning if the resolver
	// panics. Defaults to discarding everything.
	Logger *slog.Logger
	// Backlog, when set, reports whether more asks are already queued (resolve
	// jobs waiting for a worker). When Window passes and Backlog says yes, a
	// partial group waits another Window, up to MaxWait in all: under a burst
	// River hands jobs over in fetches, and flushing the part of a group left
	// at the end of each fetch costs a call. Defaults to nil: flush at Window.
	Backlog func() bool
	// MaxWait bounds how long a group waits in all when Backlog says more is
	// coming. Defaults to 4×Window.
	MaxWait time.Duration
}

// CoalescerStats counts what a Coalescer has done since it was created.
// Stats returns a copy; fields may be added, so don't compare whole values.
type CoalescerStats struct {
	Asks           int64 // Resolve calls accepted (each waits for one batch)
	Calls          int64 // batch calls started
	IDs            int64 // ids sent, summed over calls (duplicates are sent once)
	FlushedFull    int64 // calls started because a group reached MaxBatch
	FlushedByTimer int64 // calls started because Window passed
	FlushedOnClose int64 // calls started by Close
	CallErrors     int64 // calls that returned an error (every caller got it)
}

// flushReason says why a group was sent; it picks the counter and is logged.
type flushReason string

const (
	flushFull  flushReason = "full"
	flushTimer flushReason = "timer"
	flushClose flushReason = "close"
)

type groupKey struct{ corpID, chatID string }

// batch is one (corp, chat) group: open while it collects ids, then in
// flight, then done. Every caller waits on done and reads its own answer,
// so a duplicate id costs a map lookup, not a second slot in the call.
type batch struct {
	key    groupKey
	ids    []string            // distinct, in order of first ask
	seen   map[string]struct{} // ids, for dedup while open
	stop   func() bool         // stops the Window timer
	opened time.Time           // first ask, for MaxWait

	done    chan struct{}     // closed when pending, errs and err are set
	pending map[string]string // external_userid → pending_id, only non-empty ones
	errs    map[string]error  // ids WeCom refused alone, after bisecting
	err     error             // the error of the whole call, for every caller
}

// Coalescer turns concurrent single-id asks into few batch calls of
// corpgroup/batch/external_userid_to_pending_id. Asks are grouped by
// (corpID, chatID): WeCom ignores ids outside the chat, and batches never mix
// corps (protocol reference §4.5). A group is sent when it holds MaxBatch
// distinct ids or Window after its first ask, whichever comes first; while a
// call is in flight, new asks start a new group, and an ask for an id that
// is already in flight waits for that call instead of sending it again.
//
// A Coalescer is safe for concurrent use. Close it to send what is pending.
type Coalescer struct {
	resolver PendingResolver
	cfg      CoalescerConfig
	log      *slog.Logger

	// afterFunc starts the Window timer; tests replace it to fire timers by hand.
	afterFunc func(d time.Duration, f func()) (stop func() bool)

	// base is the parent of every call's context; abandon cancels it.
	base    context.Context
	abandon context.CancelFunc

	mu       sync.Mutex
	open     map[groupKey]*batch
	inflight map[groupKey]map[string]*batch // ids of calls not yet answered
	closed   bool
	stats    CoalescerStats
	calls    sync.WaitGroup // calls in flight, for Close
}

// NewCoalescer returns a Coalescer that sends batches to r.
func NewCoalescer(r PendingResolver, cfg CoalescerConfig) (*Coalescer, error) {
	if r == nil {
		return nil, errors.New("pipeline: NewCoalescer: resolver is nil; pass the *wecom.Client")
	}
	switch {
	case cfg.Window < 0:
		return nil, fmt.Errorf("pipeline: CoalescerConfig.Window: %v is negative", cfg.Window)
	case cfg.MaxBatch < 0:
		return nil, fmt.Errorf("pipeline: CoalescerConfig.MaxBatch: %d is negative", cfg.MaxBatch)
	case cfg.MaxBatch > wecom.MaxBatchIDs:
		return nil, fmt.Errorf("pipeline: CoalescerConfig.MaxBatch: %d exceeds WeCom's maximum of %d ids per call", cfg.MaxBatch, wecom.MaxBatchIDs)
	case cfg.CallTimeout < 0:
		return nil, fmt.Errorf("pipeline: CoalescerConfig.CallTimeout: %v is negative", cfg.CallTimeout)
	}
	cfg.Window = cmp.Or(cfg.Window, DefaultCoalescerWindow)
	cfg.MaxBatch = cmp.Or(cfg.MaxBatch, DefaultCoalescerMaxBatch)
	cfg.CallTimeout = cmp.Or(cfg.CallTimeout, DefaultCoalescerCallTimeout)
	if cfg.MaxWait < cfg.Window {
		cfg.MaxWait = 4 * cfg.Window
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base, abandon := context.WithCancel(context.Background())
	return &Coalescer{
		resolver: r,
		cfg:      cfg,
		log:      log,
		base:     base,
		abandon:  abandon,
		afterFunc: func(d time.Duration, f func()) func() bool {
			return time.AfterFunc(d, f).Stop
		},
		open:     make(map[groupKey]*batch),
		inflight: make(map[groupKey]map[string]*batch),
	}, nil
}

// Resolve returns externalUserID's pending_id in corpID, or "" when WeCom has
// none. chatID, if set, restricts the lookup to that customer group. Asks
// with the same (corpID, chatID) share a call, and an id asked twice is sent
// once. A call error is returned unchanged to every caller of that batch, so
// errors.Is/As and wecom's predicates work on it, except an error that blames
// an unnamed id (40096): the batch is then split in halves until each bad id
// fails alone, and the others get their answers. If ctx ends first, Resolve
// returns ctx.Err() and the call goes on for the other callers. After Close
// it returns ErrCoalescerClosed.
func (c *Coalescer) Resolve(ctx context.Context, corpID, chatID, externalUserID string) (string, error) {
	if externalUserID == "" {
		return "", fmt.Errorf("pipeline: coalescer: empty external_userid: %w", wecom.ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	b, err := c.join(groupKey{corpID, chatID}, externalUserID)
	if err != nil {
		return "", err
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		// Prefer an answer that is already there.
		select {
		case <-b.done:
		default:
			return "", ctx.Err()
		}
	}
	if b.err != nil {
		return "", b.err
	}
	if err := b.errs[externalUserID]; err != nil {
		return "", err
	}
	return b.pending[externalUserID], nil
}

// join adds id to its group (or to the call already carrying it) and returns
// the batch whose answer the caller waits for.
func (c *Coalescer) join(key groupKey, id string) (*batch, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrCoalescerClosed
	}
	c.stats.Asks++
	if b := c.inflight[key][id]; b != nil {
		return b, nil
	}
	b := c.open[key]
	if b == nil {
		b = &batch{
			key:    key,
			ids:    make([]string, 0, min(c.cfg.MaxBatch, 16)),
			seen:   make(map[string]struct{}),
			done:   make(chan struct{}),
			opened: time.Now(),
		}
		c.open[key] = b
		b.stop = c.afterFunc(c.cfg.Window, func() { c.flushOnTimer(b) })
	}
	if _, dup := b.seen[id]; !dup {
		b.seen[id] = struct{}{}
		b.ids = append(b.ids, id)
		if len(b.ids) >= c.cfg.MaxBatch {
			c.flushLocked(b, flushFull)
		}
	}
	return b, nil
}

// flushOnTimer sends b unless it was already sent (full or by Close): the
// timer may fire while the flush that stopped it holds the lock.
func (c *Coalescer) flushOnTimer(b *batch) {
	// Asked outside the lock: Backlog may query the database.
	wait := c.cfg.Backlog != nil && time.Since(b.opened)+c.cfg.Window <= c.cfg.MaxWait && c.cfg.Backlog()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[b.key] != b {
		return
	}
	if wait && !c.closed {
		b.stop = c.afterFunc(c.cfg.Window, func() { c.flushOnTimer(b) })
		return
	}
	c.flushLocked(b, flushTimer)
}

// flushLocked moves b from open to in flight and starts its call. c.mu must
// be held.
func (c *Coalescer) flushLocked(b *batch, why flushReason) {
	delete(c.open, b.key)
	b.stop()
	c.stats.Calls++
	c.stats.IDs += int64(len(b.ids))
	switch why {
	case flushFull:
		c.stats.FlushedFull++
	case flushTimer:
		c.stats.FlushedByTimer++
	case flushClose:
		c.stats.FlushedOnClose++
	}
	fl := c.inflight[b.key]
	if fl == nil {
		fl = make(map[string]*batch, len(b.ids))
		c.inflight[b.key] = fl
	}
	for _, id := range b.ids {
		fl[id] = b
	}
	c.calls.Add(1)
	go c.call(b, why)
}

// call runs b's WeCom call and hands the answer to every waiter.
func (c *Coalescer) call(b *batch, why flushReason) {
	defer c.calls.Done()
	ctx, cancel := context.WithTimeout(c.base, c.cfg.CallTimeout)
	defer cancel()
	start := time.Now()
	res, err := c.invoke(ctx, b.key, b.ids)
	if err != nil && len(b.ids) > 1 && isIDError(err) {
		// WeCom refused the batch for an id it does not name: halve it
		// until the offending ids stand alone, so the others get answers.
		b.errs = map[string]error{}
		var budget *int
		if maybeWide(err) {
			n := maxWideBisectCalls
			budget = &n
		}
		res, err = c.bisect(ctx, b.key, b.ids, b.errs, err, budget)
	}
	if err == nil {
		b.pending = make(map[string]string, len(res))
		for _, r := range res {
			if _, asked := b.seen[r.ExternalUserID]; !asked || r.PendingID == "" {
				continue
			}
			if _, dup := b.pending[r.ExternalUserID]; !dup {
				b.pending[r.ExternalUserID] = r.PendingID
			}
		}
	}
	b.err = err
	// Checked first so a discarded line costs no allocations.
	if c.log.Enabled(ctx, slog.LevelDebug) {
		c.log.Debug("coalescer: batch call",
			"corp_id", b.key.corpID, "chat_id", b.key.chatID, "ids", len(b.ids),
			"flush", string(why), "elapsed", time.Since(start), "error", err)
	}

	c.mu.Lock()
	fl := c.inflight[b.key]
	for _, id := range b.ids {
		if fl[id] == b {
			delete(fl, id)
		}
	}
	if len(fl) == 0 {
		delete(c.inflight, b.key)
	}
	if err != nil {
		c.stats.CallErrors++
	}
	c.mu.Unlock()
	close(b.done)
}

// invoke calls the resolver, turning a panic into an error: the call runs in
// the Coalescer's goroutine, not the job's, so River's panic recovery would
// not catch it and the whole process would die.
func (c *Coalescer) invoke(ctx context.Context, key groupKey, ids []string) (res []wecom.PendingResult, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Warn("coalescer: resolver panicked",
				"corp_id", key.corpID, "chat_id", key.chatID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			res, err = nil, fmt.Errorf("pipeline: coalescer: resolver panicked: %v", p)
		}
	}()
	return c.resolver.ExternalUserIDToPendingID(ctx, key.corpID, key.chatID, ids)
}

// maxWideBisectCalls bounds the calls spent isolating an error that may as
// well concern every id (maybeWide): enough to isolate two or three bad ids
// in a full batch, where one call per id would be a hundred when the whole
// app is out of scope.
const maxWideBisectCalls = 32

// bisect resolves ids in halves after a call failed with an id error. An id
// that fails alone gets the error in errs; the answers of the others are
// returned. Any other error (transient, deployment) ends the search and is
// returned for the whole batch: River retries it. With budget set, the
// search makes at most that many calls; the ids it could not reach get
// whole, the batch's error.
func (c *Coalescer) bisect(ctx context.Context, key groupKey, ids []string, errs map[string]error, whole error, budget *int) ([]wecom.PendingResult, error) {
	var out []wecom.PendingResult
	for _, half := range [][]string{ids[:len(ids)/2], ids[len(ids)/2:]} {
		if budget != nil {
			if *budget <= 0 {
				for _, id := range half {
					errs[id] = whole
				}
				continue
			}
			*budget--
		}
		res, err := c.invoke(ctx, key, half)
		switch {
		case err == nil:
			out = append(out, res...)
		case !isIDError(err):
			return nil, err
		case len(half) == 1:
			errs[half[0]] = err
		default:
			res, err := c.bisect(ctx, key, half, errs, whole, budget)
			if err != nil {
				return nil, err
			}
			out = append(out, res...)
		}
	}
	return out, nil
}

// isIDError reports whether WeCom may have refused a batch because of an id
// in it, as opposed to the deployment or the moment, which would fail any
// split of it alike: 40096 (invalid external_userid) and 40058 (invalid
// parameter) certainly; 84061 (no relationship: a customer removed before
// its lookup) and 50002 (out of the permission scope) perhaps, as the
// protocol reference leaves open whether WeCom answers them per batch.
func isIDError(err error) bool {
	switch apiCode(err) {
	case wecom.CodeInvalidExternalUserID, wecom.CodeInvalidParameter, wecom.CodeNotCustomerYet, wecom.CodeOutOfScope:
		return true
	}
	return false
}

// maybeWide reports whether an id error may as well concern every id: 50002
// when the whole app is out of scope. Isolating it gets a call budget.
func maybeWide(err error) bool { return apiCode(err) == wecom.CodeOutOfScope }

// apiCode is err's WeCom errcode, 0 if it has none.
func apiCode(err error) int {
	var ae *wecom.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return 0
}

// Stats returns a copy of the counters.
func (c *Coalescer) Stats() CoalescerStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Close sends every pending group at once, so their callers get answers,
// and waits for all calls in flight. Later Resolves return
// ErrCoalescerClosed. Close may be called more than once.
func (c *Coalescer) Close() {
	c.flushAll()
	c.calls.Wait()
}

// Shutdown sends what is pending, like Close, but waits for the calls only
// until ctx ends: then it cancels the calls still in flight (their callers
// get the context's error and River retries the jobs) and returns ctx's
// error without waiting for them to return, so a transport that ignores
// cancellation cannot hold up the process's exit.
func (c *Coalescer) Shutdown(ctx context.Context) error {
	c.flushAll()
	done := make(chan struct{})
	go func() {
		c.calls.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		c.abandon()
		return ctx.Err()
	}
}

// flushAll closes the Coalescer to new asks and sends every open group.
func (c *Coalescer) flushAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		for _, b := range c.open {
			c.flushLocked(b, flushClose)
		}
	}
}
