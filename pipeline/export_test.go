package pipeline

import (
	"time"

	"github.com/riverqueue/river"
)

// WorkerOf returns the pipeline's worker for T's kind, for rivertest.
func WorkerOf[T river.JobArgs](p *Pipeline) river.Worker[T] {
	ws := p.newWorkers()
	for _, w := range []any{ws.resolve, ws.endLink, ws.register, ws.backfill, ws.renew, ws.notify, ws.prune, ws.reconcile, ws.chatMembers} {
		if w, ok := w.(river.Worker[T]); ok {
			return w
		}
	}
	return nil
}

// PeriodicInsert returns each periodic job's args and insert options, by id.
func PeriodicInsert() map[string]func() (river.JobArgs, *river.InsertOpts) {
	out := map[string]func() (river.JobArgs, *river.InsertOpts){}
	for _, p := range periodics(time.Hour, time.Minute) {
		out[p.id] = p.job
	}
	return out
}
