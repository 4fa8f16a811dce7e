package storetest

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/pendinglink/pendinglink/store"
)

// Job is the one job kind Policy enqueues. What says which write it
// followed ("event", "notification" or "pending_id") and
// Subject what it is about: the customer or chat member of an event, the
// link id of a notification, the unionid of a fan.
type Job struct {
	What    string `json:"what"`
	EventID int64  `json:"event_id,omitempty"`
	Subject string `json:"subject"`
}

// Kind implements river.JobArgs.
func (Job) Kind() string { return "storetest" }

// RecordingWorkers returns workers that work Job by sending its args to
// worked, buffered for one, so a test can see which job ran.
func RecordingWorkers() (workers *river.Workers, worked <-chan Job) {
	ch := make(chan Job, 1)
	workers = river.NewWorkers()
	river.AddWorker(workers, river.WorkFunc(func(_ context.Context, job *river.Job[Job]) error {
		ch <- job.Args
		return nil
	}))
	return workers, ch
}

// Receive returns the next value from ch and fails tb with msg if none
// comes within 30 seconds. The timeout only bounds a failing test; nothing
// waits for it.
func Receive[T any](tb testing.TB, ch <-chan T, msg string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
	}
	tb.Fatal(msg)
	var zero T
	return zero
}

// Job.What values.
const (
	JobEvent        = "event"
	JobNotification = "notification"
	JobPendingID    = "pending_id"
)

// Policy is a store.JobPolicy for tests, independent of the pipeline's: an
// event gets one Job per customer (ExternalUserID) and per chat member;
// notifications and pending_ids get one each when Notify and PendingIDs
// are set. Its jobs go to River's default queue.
type Policy struct {
	Notify     bool
	PendingIDs bool
}

var _ store.JobPolicy = Policy{}

// EventJobs implements store.JobPolicy.
func (Policy) EventJobs(ev *store.Event, id int64) []river.InsertManyParams {
	if ev.Kind == store.KindIgnored {
		return nil
	}
	var jobs []river.InsertManyParams
	if ev.ExternalUserID != "" {
		jobs = append(jobs, river.InsertManyParams{Args: Job{What: JobEvent, EventID: id, Subject: ev.ExternalUserID}})
	}
	for _, m := range ev.Members {
		jobs = append(jobs, river.InsertManyParams{Args: Job{What: JobEvent, EventID: id, Subject: m}})
	}
	return jobs
}

// NotificationJobs implements store.JobPolicy.
func (p Policy) NotificationJobs(l store.Link) []river.InsertManyParams {
	if !p.Notify {
		return nil
	}
	return []river.InsertManyParams{{Args: Job{What: JobNotification, Subject: strconv.FormatInt(l.ID, 10)}}}
}

// PendingIDJobs implements store.JobPolicy.
func (p Policy) PendingIDJobs(f store.FanInput) []river.InsertManyParams {
	if !p.PendingIDs {
		return nil
	}
	return []river.InsertManyParams{{Args: Job{What: JobPendingID, Subject: f.UnionID}}}
}

// Jobs returns the args of every job of Policy's kind, finished or not,
// oldest first. It reads them through River's JobList, so it works on every
// engine.
func Jobs(tb testing.TB, db *store.DB) []Job {
	tb.Helper()
	rows := jobRows(tb, db)
	out := make([]Job, len(rows))
	for i, row := range rows {
		out[i] = decodeJob(tb, row)
	}
	return out
}

// decodeJob returns the args of a job of Policy's kind.
func decodeJob(tb testing.TB, row *rivertype.JobRow) Job {
	tb.Helper()
	var j Job
	if err := json.Unmarshal(row.EncodedArgs, &j); err != nil {
		tb.Fatalf("storetest: decode job %d: %v", row.ID, err)
	}
	return j
}

// jobRows lists the jobs of Policy's kind, oldest first.
func jobRows(tb testing.TB, db *store.DB) []*rivertype.JobRow {
	tb.Helper()
	return JobsOfKind(tb, db, Job{}.Kind())
}

// JobsOfKind lists the jobs of a kind, finished or not, oldest first,
// through River's JobList.
func JobsOfKind(tb testing.TB, db *store.DB, kind string) []*rivertype.JobRow {
	tb.Helper()
	res, err := db.River().JobList(context.Background(), river.NewJobListParams().Kinds(kind).First(10_000))
	if err != nil {
		tb.Fatalf("storetest: list jobs: %v", err)
	}
	return res.Jobs
}
