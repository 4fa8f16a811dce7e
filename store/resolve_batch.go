package store

import (
	"context"
	"fmt"
)

// Resolutions are group-committed like events: a resolve batch answers up
// to 100 jobs at the same moment, and recording them one transaction (and
// one fsync) each on the single write connection would release the River
// workers one by one, so the next batch would trickle in small. One writer
// takes every RecordResolution waiting and commits them together.

type resolutionReq struct {
	r    Resolution
	done chan resolutionAns // buffered: the writer never blocks
}

type resolutionAns struct {
	links []Link
	err   error
}

// submitResolution hands r to the resolution writer and waits for its
// transaction. Once handed over it waits for the commit even if ctx ends:
// the transaction is short, and the caller then learns what happened.
func (db *DB) submitResolution(ctx context.Context, r Resolution) ([]Link, error) {
	req := &resolutionReq{r: r, done: make(chan resolutionAns, 1)}
	select {
	case db.resCh <- req:
	case <-db.resClosing:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ans := <-req.done
	return ans.links, ans.err
}

// resolutionLoop is the resolution writer; it stops when ctx ends.
func (db *DB) resolutionLoop(ctx context.Context) {
	defer close(db.resDone)
	groupCommitLoop(ctx, db.resCh, db.cfg.MaxBatch, func(batch []*resolutionReq) {
		rs := make([]Resolution, len(batch))
		for i, req := range batch {
			rs[i] = req.r
		}
		links, errs, err := db.eng.recordResolutions(context.WithoutCancel(ctx), db.jobs(), rs, db.cfg.Now())
		db.noteWrite(err)
		if err != nil {
			err = fmt.Errorf("store: record %d resolutions: %w", len(rs), err)
		}
		for i, req := range batch {
			switch {
			case err != nil:
				req.done <- resolutionAns{err: err}
			case errs[i] != nil:
				req.done <- resolutionAns{err: fmt.Errorf("store: record resolution: %w", errs[i])}
			default:
				req.done <- resolutionAns{links: links[i]}
			}
		}
	})
}
