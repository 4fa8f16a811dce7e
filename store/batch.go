package store

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
)

// Request states. A request moves from queued to either taken (by the writer,
// which then always answers) or cancelled (by its caller, whose ctx ended
// first, after which the writer skips it). The compare-and-swap between the
// two is what guarantees that a caller who gave up left nothing behind.
const (
	reqQueued int32 = iota
	reqTaken
	reqCancelled
)

// saveReq is one SaveEvent call waiting for the writer.
type saveReq struct {
	ev    *Event
	state atomic.Int32
	done  chan saveAnswer // buffered: the writer never blocks on a caller
}

type saveAnswer struct {
	inserted bool
	err      error
}

// testHooks let tests stop the writer at known points. Both are nil outside
// tests, and are set before the first SaveEvent (the channel send orders
// that write before the writer's read).
type testHooks struct {
	// received runs after a batch was received, before its requests are
	// taken.
	received func(n int)
	// taken runs after the requests were taken, before the transaction.
	taken func(n int)
}

// submit hands ev to the writer and waits for its answer.
func (db *DB) submit(ctx context.Context, ev *Event) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	req := &saveReq{ev: ev, done: make(chan saveAnswer, 1)}
	select {
	case db.saveCh <- req:
	case <-db.closing:
		return false, ErrClosed
	case <-ctx.Done():
		return false, ctx.Err()
	}
	select {
	case ans := <-req.done:
		return ans.inserted, ans.err
	case <-ctx.Done():
		if req.state.CompareAndSwap(reqQueued, reqCancelled) {
			return false, ctx.Err()
		}
		// The writer took the event: its transaction decides, and is
		// short, so report what really happened.
		ans := <-req.done
		return ans.inserted, ans.err
	}
}

// writeLoop is the single writer. Each round it blocks for one request, then
// takes whatever else is already waiting, up to MaxBatch, and commits it all
// at once. It never waits for more to arrive: under load requests pile up
// while the previous batch commits, so batches grow with the load by
// themselves, and at low load a lone event is not delayed.
func (db *DB) writeLoop(ctx context.Context) {
	defer close(db.writerDone)
	groupCommitLoop(ctx, db.saveCh, db.cfg.MaxBatch, func(batch []*saveReq) { db.commitBatch(ctx, batch) })
}

// groupCommitLoop is the shape of both writers: block for one request, take
// whatever else is already waiting (up to limit) without waiting for more, and
// hand the batch to commit. Under load requests pile up while the previous
// batch commits, so batches grow with the load by themselves; at low load a
// lone request is not delayed. It returns when ctx ends.
func groupCommitLoop[T any](ctx context.Context, ch <-chan T, limit int, commit func(batch []T)) {
	batch := make([]T, 0, limit)
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-ch:
			batch = append(batch[:0], req)
		}
	drain:
		for len(batch) < limit {
			select {
			case req := <-ch:
				batch = append(batch, req)
			default:
				break drain
			}
		}
		commit(batch)
		clear(batch) // drop references to answered requests
	}
}

// commitBatch stores the batch's events in one transaction and answers
// every caller.
func (db *DB) commitBatch(ctx context.Context, batch []*saveReq) {
	if h := db.hooks.received; h != nil {
		h(len(batch))
	}
	reqs := batch[:0:0]
	for _, req := range batch {
		if req.state.CompareAndSwap(reqQueued, reqTaken) {
			reqs = append(reqs, req)
		}
	}
	if len(reqs) == 0 {
		return
	}
	if h := db.hooks.taken; h != nil {
		h(len(reqs))
	}

	evs := make([]*Event, len(reqs))
	for i, req := range reqs {
		evs[i] = req.ev
	}
	// The batch runs to completion even while Close is waiting: its callers
	// are owed an answer, and rolling back half-way would waste the work.
	txCtx := context.WithoutCancel(ctx)
	results, err := db.eng.saveEvents(txCtx, db.jobs(), evs, db.cfg.Now())
	if errors.Is(err, errBusy) {
		// Another process held the lock past busy_timeout; nothing was
		// committed, so one more try is safe.
		db.cfg.Logger.WarnContext(txCtx, "store: event batch busy, retrying", "events", len(evs))
		results, err = db.eng.saveEvents(txCtx, db.jobs(), evs, db.cfg.Now())
	}
	db.noteWrite(err)
	if err != nil {
		err = fmt.Errorf("store: save %d events: %w", len(evs), err)
		db.cfg.Logger.ErrorContext(txCtx, "store: event batch failed", "events", len(evs), "err", err)
		for _, req := range reqs {
			req.done <- saveAnswer{err: err}
		}
		return
	}
	for i, req := range reqs {
		r := results[i]
		req.ev.ID, req.ev.State, req.ev.ReceivedAt = r.id, r.state, r.receivedAt
		req.done <- saveAnswer{inserted: r.inserted}
	}
}
