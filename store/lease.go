package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
)

// ErrLeaseHeld is returned by TryLease when another instance holds the
// lease.
var ErrLeaseHeld = errors.New("store: lease held by another instance")

// Lease is a cluster-wide role that one process holds at a time. It ends
// with Release, or when the process dies: on PostgreSQL it is a session
// advisory lock on a connection of its own, which the server drops with the
// process; on SQLite one process owns the database, so it is a flag in that
// process.
type Lease struct {
	check   func(ctx context.Context) error
	release func() error

	// mu orders Check and Release: the lease's connection is not safe
	// for concurrent use.
	mu       sync.Mutex
	released bool
	err      error
}

// errLeaseReleased is Check's error after Release.
var errLeaseReleased = errors.New("store: lease released")

// Check returns an error once the lease may have been lost (its
// connection broke) or was released; the caller should stop acting on it
// and Release it. It is safe to call concurrently with Release.
func (l *Lease) Check(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return errLeaseReleased
	}
	return l.check(ctx)
}

// Release gives the lease up. It is idempotent.
func (l *Lease) Release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.released {
		l.released = true
		l.err = l.release()
	}
	return l.err
}

// TryLease takes the lease called name if no process holds it, and returns
// ErrLeaseHeld if one does.
func (db *DB) TryLease(ctx context.Context, name string) (*Lease, error) {
	select {
	case <-db.closing:
		return nil, ErrClosed
	default:
	}
	return db.eng.tryLease(ctx, name)
}

// localLeases are the leases of a database one process owns (SQLite).
type localLeases struct {
	mu   sync.Mutex
	held map[string]bool
}

func (ll *localLeases) tryLease(_ context.Context, name string) (*Lease, error) {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if ll.held[name] {
		return nil, ErrLeaseHeld
	}
	if ll.held == nil {
		ll.held = make(map[string]bool)
	}
	ll.held[name] = true
	return &Lease{
		check: func(context.Context) error { return nil },
		release: func() error {
			ll.mu.Lock()
			defer ll.mu.Unlock()
			delete(ll.held, name)
			return nil
		},
	}, nil
}

// tryLease implements engine: a session advisory lock on a connection
// opened for it alone, so that the pool's connections stay free and a
// broken connection cannot be silently replaced by one without the lock.
func (e *postgresEngine) tryLease(ctx context.Context, name string) (_ *Lease, err error) {
	defer func() { err = redactError(err, e.dsn) }()
	// A connection that failed to take the lease is kept for the next try:
	// instances that do not hold it try every second.
	e.spareMu.Lock()
	conn := e.spare[name]
	delete(e.spare, name)
	e.spareMu.Unlock()
	if conn != nil && conn.Ping(ctx) != nil {
		_ = conn.Close(context.Background())
		conn = nil
	}
	if conn == nil {
		if conn, err = pgx.ConnectConfig(ctx, e.connCfg.Copy()); err != nil {
			return nil, dbError("lease: connect", err)
		}
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended('pendinglink lease ' || $1, 0))`, name).Scan(&got); err != nil {
		return nil, errors.Join(dbError("lease: lock", err), conn.Close(context.Background()))
	}
	if !got {
		e.spareMu.Lock()
		if e.spare == nil {
			e.spare = map[string]*pgx.Conn{}
		}
		e.spare[name] = conn
		e.spareMu.Unlock()
		return nil, ErrLeaseHeld
	}
	return &Lease{
		check: func(ctx context.Context) error {
			if err := conn.Ping(ctx); err != nil {
				return redactError(dbError("lease: check", err), e.dsn)
			}
			return nil
		},
		release: func() error {
			// Unlock first: closing the session releases its advisory locks
			// too, but only once the server has noticed, after Close
			// returned, so another instance's try could still fail. If the
			// unlock fails, the connection is broken and its locks go with
			// its session.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _ = conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
			return redactError(conn.Close(ctx), e.dsn)
		},
	}, nil
}

// closeSpares closes the connections kept for the next try of a lease.
func (e *postgresEngine) closeSpares() {
	e.spareMu.Lock()
	defer e.spareMu.Unlock()
	for name, c := range e.spare {
		_ = c.Close(context.Background())
		delete(e.spare, name)
	}
}

// leadQueues works each of Config.LeasedQueues while this process holds
// its lease: it tries to take the free ones now and every LeaseRetry, and
// stops working a queue whose lease broke. It returns when ctx ends,
// leaving the queues it holds running; Close releases them after River
// stopped.
func (db *DB) leadQueues(ctx context.Context, held map[string]*Lease) {
	t := time.NewTicker(db.cfg.LeaseRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		db.tryLeadQueues(ctx, held)
	}
}

// tryLeadQueues makes one pass of leadQueues.
func (db *DB) tryLeadQueues(ctx context.Context, held map[string]*Lease) {
	log := db.cfg.Logger
	for _, q := range db.cfg.LeasedQueues {
		l := held[q]
		if l != nil {
			err := l.Check(ctx)
			if err == nil || ctx.Err() != nil {
				continue
			}
			log.WarnContext(ctx, "store: lost the lease of a queue; another instance takes it over", "queue", q, "err", err)
			// Another instance may already work the queue: stop first, then
			// let go. Remove waits for the running jobs.
			if err := db.river.Queues().Remove(ctx, q); err != nil {
				log.ErrorContext(ctx, "store: stop working a queue", "queue", q, "err", err)
				continue
			}
			l.Release()
			delete(held, q)
			continue
		}
		l, err := db.TryLease(ctx, "queue "+q)
		switch {
		case errors.Is(err, ErrLeaseHeld) || ctx.Err() != nil:
			continue
		case err != nil:
			log.WarnContext(ctx, "store: take the lease of a queue", "queue", q, "err", err)
			continue
		}
		if err := db.river.Queues().Add(q, db.cfg.Queues[q]); err != nil {
			log.ErrorContext(ctx, "store: work a leased queue", "queue", q, "err", err)
			l.Release()
			continue
		}
		held[q] = l
		log.InfoContext(ctx, "store: this instance works the queue", "queue", q)
	}
}

// validateLeasedQueues checks that every leased queue is one of Queues,
// with a number of workers River accepts: River checks it only when the
// queue is added, at run time, where the error could only be logged.
func (cfg Config) validateLeasedQueues() error {
	for _, q := range cfg.LeasedQueues {
		qc, ok := cfg.Queues[q]
		if !ok {
			return fmt.Errorf("store: Config.LeasedQueues: %q is not in Config.Queues", q)
		}
		if qc.MaxWorkers < 1 || qc.MaxWorkers > river.QueueNumWorkersMax {
			return fmt.Errorf("store: Config.Queues[%q].MaxWorkers must be from 1 to %d", q, river.QueueNumWorkersMax)
		}
	}
	return nil
}
