package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/pendinglink/pendinglink/quota"
)

// Errors returned by the store. Driver errors are translated into them by
// dbError, from each engine's error codes, so they match the same way on
// SQLite and PostgreSQL.
var (
	// ErrNotFound means the requested row does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict means a write broke a uniqueness or integrity constraint.
	ErrConflict = errors.New("store: conflict")
	// ErrInvalid means the input failed validation; nothing was written.
	ErrInvalid = errors.New("store: invalid")
	// ErrClosed means the DB was closed.
	ErrClosed = errors.New("store: closed")
	// ErrClaimed means another worker holds what was asked for (a link's
	// next notification); try again after its lease.
	ErrClaimed = errors.New("store: claimed by another worker")
)

// errBusy marks a transient lock error (SQLITE_BUSY); a batch that fails with
// it is retried once.
var errBusy = errors.New("store: database busy")

// Defaults applied by Open.
const (
	DefaultDSN             = "./pendinglink.db"
	DefaultMaxBatch        = 256
	DefaultReadConns       = 4
	DefaultBusyTimeout     = 5 * time.Second
	DefaultSoftStopTimeout = 10 * time.Second
	DefaultMaxWorkers      = 10
	DefaultMaxConns        = 10
	// DefaultLeaseRetry bounds how long a leased queue goes unworked after
	// its instance died.
	DefaultLeaseRetry = time.Second

	DefaultCheckpointInterval       = time.Second
	DefaultWriteFailureWindow       = 30 * time.Second
	DefaultWALRestartPages    int64 = 16384 // 64 MiB of 4 KiB pages
)

// Config configures Open. The zero value opens ./pendinglink.db with an
// insert-only River client.
type Config struct {
	// DSN is a SQLite file path (e.g. "./pendinglink.db") or a "file:" URI,
	// or a PostgreSQL URL starting with "postgres://" or "postgresql://"
	// (pgx's syntax, e.g. "postgres://user:pass@host:5432/db?sslmode=disable").
	// In-memory SQLite databases are rejected: WAL and the separate read pool
	// need a file. Errors never include the DSN's password.
	// Defaults to DefaultDSN.
	DSN string

	// Now is the clock for the timestamps the store writes.
	// Defaults to time.Now.
	Now func() time.Time

	// Logger receives the store's and River's logs.
	// Defaults to a logger that discards everything.
	Logger *slog.Logger

	// Workers are River's workers. They may be added to the bundle after Open
	// and before Start, so workers can hold the *DB. Nil gives an insert-only
	// River client that enqueues jobs but never works them, and Start is a
	// no-op. With Workers set, every job kind Jobs enqueues must have a
	// worker, or the write fails with River's UnknownJobKindError.
	// Defaults to nil.
	Workers *river.Workers

	// LeasedQueues names queues of Queues that one instance at a time works:
	// the one holding the queue's lease (see Lease). The others try to take
	// it every LeaseRetry, so when the holder dies its queue moves on within
	// about that long. For work that is cheaper seen whole, like resolve
	// lookups batched 100 to a WeCom call. On SQLite, one process owns the
	// database and works them all. Defaults to none.
	LeasedQueues []string
	// LeaseRetry is how often an instance tries to take the lease of a
	// leased queue it does not work, and checks the ones it does. Defaults
	// to DefaultLeaseRetry.
	LeaseRetry time.Duration

	// Queues are River's queues, used only when Workers is set. They must
	// include every queue Jobs inserts into.
	// Defaults to River's default queue with DefaultMaxWorkers.
	Queues map[string]river.QueueConfig

	// PeriodicJobs are River's periodic jobs (e.g. retention prunes), used
	// only when Workers is set. Defaults to none.
	PeriodicJobs []*river.PeriodicJob

	// ErrorHandler is told about job errors and panics.
	// Defaults to nil (River logs them).
	ErrorHandler river.ErrorHandler

	// FetchPollInterval is how often River polls for new jobs when it hears
	// of none. Defaults to River's default (1 s).
	FetchPollInterval time.Duration

	// FetchCooldown is the minimum time between River's job fetches.
	// Defaults to River's default (100 ms).
	FetchCooldown time.Duration

	// JobTimeout bounds one job attempt. Defaults to River's default (1 min).
	JobTimeout time.Duration

	// MaxAttempts is how many times a job is tried before it is discarded.
	// Defaults to River's default (25).
	MaxAttempts int

	// SoftStopTimeout is how long Close lets running jobs finish before
	// cancelling their contexts. Defaults to DefaultSoftStopTimeout.
	SoftStopTimeout time.Duration

	// TestOnly is passed to River's Config.TestOnly, which turns off
	// features that slow tests down. Defaults to false.
	TestOnly bool

	// Jobs says which jobs follow each write (see JobPolicy); the pipeline
	// provides it. Defaults to nil: nothing is enqueued, every event is
	// stored EventRecorded (or EventIgnored) and notifications stay in the
	// outbox.
	Jobs JobPolicy

	// MaxBatch is the most events SaveEvent commits in one transaction.
	// Defaults to DefaultMaxBatch.
	MaxBatch int

	// ReadConns is the size of the read-only pool used by Status and the
	// Find/Load methods. Defaults to DefaultReadConns. SQLite only.
	ReadConns int

	// MaxConns is the most connections the PostgreSQL pool opens. One pool
	// serves the store's writes and reads and River's queries (fetching,
	// completing and rescuing jobs); River's LISTEN connection, opened when
	// Workers is set, comes on top. Each instance sharing the database opens
	// its own pool, so the sum over instances must stay under the server's
	// max_connections. Defaults to DefaultMaxConns. PostgreSQL only (SQLite
	// has one write connection and ReadConns).
	MaxConns int

	// BusyTimeout is how long a write waits for a lock held by another
	// connection or process: SQLite's busy_timeout, and on PostgreSQL the
	// lock_timeout of the store's write transactions, which queue for one
	// advisory lock (see docs/ARCHITECTURE.md). A batch of events that
	// waited longer is retried once. Defaults to DefaultBusyTimeout.
	BusyTimeout time.Duration

	// CheckpointInterval is how often SQLite's WAL is copied into the
	// database file, in the background. Defaults to
	// DefaultCheckpointInterval. SQLite only.
	CheckpointInterval time.Duration

	// WriteFailureWindow is how long a failed commit makes Ping fail, unless
	// a later commit succeeds first. Readiness thus tells a load balancer
	// that this instance cannot store callbacks (a full disk still answers
	// reads), and comes back by itself when no traffic arrives to prove
	// writes work again. Defaults to DefaultWriteFailureWindow.
	WriteFailureWindow time.Duration

	// RescueStuckJobsAfter is how long a job may be running before River
	// makes it available again (it belonged to a process that died). On
	// SQLite, jobs left running are also resumed at Start, since one
	// process owns the file; on PostgreSQL, shared by several instances, the
	// rescue is the only way back. Defaults to JobTimeout (River's default 1 min
	// when unset) plus one minute.
	RescueStuckJobsAfter time.Duration
	// InstanceID names this instance, the same across its restarts and
	// different from every other instance sharing the database (e.g. the
	// host or container name). It becomes River's client ID, and on
	// PostgreSQL a restarted instance makes the jobs its previous process
	// left running available at Start, instead of waiting for
	// RescueStuckJobsAfter. Letters, digits, '-', '_' and '.'; empty: River
	// picks an ID and only the rescue applies.
	InstanceID string

	// WALRestartPages is the WAL size, in pages, above which the store logs
	// a warning that the WAL is not restarting from its beginning (a long
	// read or another process holding it). Defaults to
	// DefaultWALRestartPages. SQLite only.
	WALRestartPages int64
}

// withDefaults returns cfg with its zero fields set to their defaults.
func (cfg Config) withDefaults() Config {
	cfg.DSN = cmp.Or(cfg.DSN, DefaultDSN)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Workers != nil && cfg.Queues == nil {
		cfg.Queues = map[string]river.QueueConfig{
			river.QueueDefault: {MaxWorkers: DefaultMaxWorkers},
		}
	}
	cfg.LeaseRetry = cmp.Or(cfg.LeaseRetry, DefaultLeaseRetry)
	cfg.SoftStopTimeout = cmp.Or(cfg.SoftStopTimeout, DefaultSoftStopTimeout)
	cfg.MaxBatch = cmp.Or(cfg.MaxBatch, DefaultMaxBatch)
	cfg.ReadConns = cmp.Or(cfg.ReadConns, DefaultReadConns)
	cfg.MaxConns = cmp.Or(cfg.MaxConns, DefaultMaxConns)
	cfg.BusyTimeout = cmp.Or(cfg.BusyTimeout, DefaultBusyTimeout)
	cfg.CheckpointInterval = cmp.Or(cfg.CheckpointInterval, DefaultCheckpointInterval)
	cfg.WALRestartPages = cmp.Or(cfg.WALRestartPages, DefaultWALRestartPages)
	cfg.WriteFailureWindow = cmp.Or(cfg.WriteFailureWindow, DefaultWriteFailureWindow)
	if cfg.RescueStuckJobsAfter == 0 {
		timeout := cfg.JobTimeout
		if timeout <= 0 {
			timeout = river.JobTimeoutDefault
		}
		cfg.RescueStuckJobsAfter = timeout + time.Minute
	}
	return cfg
}

// validate names the bad field. It never echoes the DSN, which for
// PostgreSQL may hold a password.
func (cfg Config) validate() error {
	for _, f := range []struct {
		name     string
		negative bool
	}{
		{"MaxBatch", cfg.MaxBatch < 0},
		{"ReadConns", cfg.ReadConns < 0},
		{"MaxConns", cfg.MaxConns < 0},
		{"BusyTimeout", cfg.BusyTimeout < 0},
		{"CheckpointInterval", cfg.CheckpointInterval < 0},
		{"WALRestartPages", cfg.WALRestartPages < 0},
		{"WriteFailureWindow", cfg.WriteFailureWindow < 0},
		{"RescueStuckJobsAfter", cfg.RescueStuckJobsAfter < 0},
		{"SoftStopTimeout", cfg.SoftStopTimeout < 0},
		{"LeaseRetry", cfg.LeaseRetry < 0},
	} {
		if f.negative {
			return fmt.Errorf("store: Config.%s must not be negative", f.name)
		}
	}
	switch {
	case !validInstanceID(cfg.InstanceID):
		return errors.New("store: Config.InstanceID may hold only letters, digits, '-', '_' and '.', at most 100")
	case cfg.Workers == nil && cfg.Queues != nil:
		return errors.New("store: Config.Queues needs Config.Workers (an insert-only client has no queues)")
	case cfg.Workers == nil && cfg.PeriodicJobs != nil:
		return errors.New("store: Config.PeriodicJobs needs Config.Workers (an insert-only client runs no jobs)")
	}
	return cfg.validateLeasedQueues()
}

// riverConfig builds River's client config from ours.
func (cfg Config) riverConfig() *river.Config {
	rc := &river.Config{
		Logger:            cfg.Logger,
		ErrorHandler:      cfg.ErrorHandler,
		FetchPollInterval: cfg.FetchPollInterval,
		FetchCooldown:     cfg.FetchCooldown,
		JobTimeout:        cfg.JobTimeout,
		// River's default waits an hour before it rescues the jobs of a
		// process that died; a job attempt is bounded by JobTimeout, so
		// anything running longer than that plus a margin is orphaned.
		RescueStuckJobsAfter: cfg.RescueStuckJobsAfter,
		MaxAttempts:          cfg.MaxAttempts,
		SoftStopTimeout:      cfg.SoftStopTimeout,
		TestOnly:             cfg.TestOnly,
		ID:                   cfg.InstanceID,
	}
	if cfg.Workers != nil {
		rc.Workers = cfg.Workers
		// A leased queue is added when its lease is taken (Start).
		rc.Queues = maps.Clone(cfg.Queues)
		for _, q := range cfg.LeasedQueues {
			delete(rc.Queues, q)
		}
		rc.PeriodicJobs = cfg.PeriodicJobs
	}
	return rc
}

// engine is what each database engine implements. The methods' contracts
// are those of the DB methods of the same name.
type engine interface {
	// saveEvents stores the events and their jobs in one transaction. It
	// must not modify evs: the caller applies the results after a commit.
	saveEvents(ctx context.Context, jobs jobInserter, evs []*Event, now time.Time) ([]saveResult, error)
	findEventByID(ctx context.Context, id int64) (*Event, error)
	updateEventState(ctx context.Context, id int64, state, reason string, now time.Time) error
	pruneEvents(ctx context.Context, before time.Time) (int64, error)
	status(ctx context.Context) (Status, error)
	counts(ctx context.Context) (Counts, error)
	addQuota(ctx context.Context, key string, bucket, n int64) error
	reserveQuota(ctx context.Context, key string, bucket int64, limits []quota.Limit) (bool, error)
	sharedToken(ctx context.Context, key, reject string, now time.Time, fetch func(context.Context) (Token, error)) (Token, error)
	loadQuota(ctx context.Context, key string, since int64) (map[int64]int64, error)
	pruneQuota(ctx context.Context, before int64) (int64, error)
	ping(ctx context.Context) error
	tryLease(ctx context.Context, name string) (*Lease, error)
	// resumeOrphanedJobs makes the jobs a dead process left running
	// available again and returns how many; engines shared by several
	// processes leave that to River's rescuer and return 0.
	resumeOrphanedJobs(ctx context.Context) (int64, error)

	// The pipeline (pipeline.go); each writes in one transaction and inserts
	// its follow-up jobs through jobs.
	recordResolutions(ctx context.Context, jobs jobInserter, rs []Resolution, now time.Time) (links [][]Link, errs []error, err error)
	endLinks(ctx context.Context, jobs jobInserter, e EndLink, now time.Time) ([]Link, error)
	recordChatMembers(ctx context.Context, jobs jobInserter, eventID int64, members []string, now time.Time) error
	recordFanPendingID(ctx context.Context, jobs jobInserter, unionID, pendingID string, now time.Time) ([]Link, error)
	linkExisting(ctx context.Context, jobs jobInserter, unionID string, found []CorpCustomer, sweepID int64, now time.Time) ([]Link, error)
	startSweep(ctx context.Context, reason string, registeredBefore, now time.Time) (*Sweep, bool, error)
	latestSweep(ctx context.Context) (*Sweep, error)
	fansToCheck(ctx context.Context, limit int, includeNew bool) (FansToCheck, error)
	finishSweep(ctx context.Context, id int64, now time.Time) error
	heartbeat(ctx context.Context, instance string, now time.Time) (time.Time, error)
	backlog(ctx context.Context, after time.Time) (Backlog, error)
	retryEvents(ctx context.Context, jobs jobInserter, f RetryFilter, now time.Time) (int64, error)
	retryFans(ctx context.Context, f RetryFilter, now time.Time) (int64, error)
	failFan(ctx context.Context, unionID, reason string, now time.Time) error
	updateFan(ctx context.Context, unionID string, u FanUpdate, now time.Time) error
	registerFans(ctx context.Context, fans []FanInput, opts RegisterOpts, now time.Time) (RegisterResult, error)
	nextFans(ctx context.Context, limit int) ([]QueuedFan, error)
	requeueFan(ctx context.Context, unionID, reason string, now time.Time) error
	queuedFans(ctx context.Context) (map[int]int64, error)
	findFan(ctx context.Context, unionID string, now time.Time) (*FanDetail, error)
	findLinks(ctx context.Context, f LinkFilter) ([]Link, error)
	findCustomer(ctx context.Context, corpID, externalUserID string) (*CustomerDetail, error)
	fansToRenew(ctx context.Context, before, now time.Time, limit int) ([]FanInput, error)
	strandedFans(ctx context.Context, before time.Time, limit int) ([]FanInput, error)
	renewalObservations(ctx context.Context) (RenewalObservations, error)
	hasAvailableJobs(ctx context.Context, queue string, atLeast int) (bool, error)
	nextOutbox(ctx context.Context, linkID int64) (*OutboxItem, error)
	claimOutbox(ctx context.Context, linkID int64, now time.Time, lease time.Duration) (*OutboxItem, error)
	markOutbox(ctx context.Context, id, claim int64, errMsg string, now time.Time) error
	pipelineStatus(ctx context.Context, now time.Time, expiringWithin time.Duration) (PipelineStatus, error)
	// The gauges of /metrics (gauges.go).
	jobCounts(ctx context.Context) ([]JobCount, error)
	outboxStatus(ctx context.Context) (OutboxStatus, error)
	countFansExpiring(ctx context.Context, now time.Time, within time.Duration) (int64, error)
	checkTallies(ctx context.Context) ([]TallyDrift, error)
	expiringBy(ctx context.Context, now time.Time, within time.Duration) ([]QueuedCount, error)

	// writePool is the pool River uses; its transactions are *sql.Tx.
	writePool() *sql.DB
	// shared is the SQL layer both engines are built on (Copy uses it).
	shared() *sqlEngine
	close() error
}

// saveResult is what saveEvents reports for one event.
type saveResult struct {
	inserted   bool
	id         int64
	state      string
	receivedAt time.Time
}

// DB is an open store. Its methods are safe for concurrent use.
type DB struct {
	cfg   Config
	eng   engine
	river *river.Client[*sql.Tx]

	// Group commit (batch.go).
	saveCh       chan *saveReq
	closing      chan struct{}
	cancelWriter context.CancelFunc
	writerDone   chan struct{}

	// Resolution group commit (resolve_batch.go). It stops after River, so
	// jobs still running at Close can record their answers.
	resCh      chan *resolutionReq
	resClosing chan struct{}
	cancelRes  context.CancelFunc
	resDone    chan struct{}
	hooks      testHooks

	// Leased queues (lease.go): the leases held, and the loop that takes
	// and checks them.
	leases   map[string]*Lease
	stopLead context.CancelFunc
	leadDone chan struct{}

	// writeFailed holds the last failed commit until one succeeds (Ping).
	writeFailed atomic.Pointer[writeFailure]

	closeOnce sync.Once
	closeErr  error
}

// writeFailure is a commit that failed, and when.
type writeFailure struct {
	at  time.Time
	err error
}

// noteWrite records the outcome of a commit for Ping.
func (db *DB) noteWrite(err error) {
	if err == nil {
		if db.writeFailed.Load() != nil {
			db.writeFailed.Store(nil)
		}
		return
	}
	db.writeFailed.Store(&writeFailure{at: db.cfg.Now(), err: err})
}

// Open opens the database named by cfg.DSN (SQLite, or PostgreSQL for a
// postgres:// URL), applies the store's migrations and River's, and builds
// the River client. On PostgreSQL, instances opening the same database at
// once migrate one after the other. It does not start working jobs: call
// Start for that. Close releases everything.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}

	var (
		eng    engine
		driver riverdriver.Driver[*sql.Tx]
		err    error
	)
	switch {
	case isPostgresDSN(cfg.DSN):
		eng, driver, err = openPostgres(ctx, cfg)
	default:
		eng, driver, err = openSQLite(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}

	rc, err := openRiver(cfg, driver)
	if err != nil {
		return nil, errors.Join(err, eng.close())
	}

	writerCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	db := &DB{
		cfg:          cfg,
		eng:          eng,
		river:        rc,
		saveCh:       make(chan *saveReq),
		closing:      make(chan struct{}),
		cancelWriter: cancel,
		writerDone:   make(chan struct{}),
		resCh:        make(chan *resolutionReq),
		resClosing:   make(chan struct{}),
		resDone:      make(chan struct{}),
	}
	resCtx, cancelRes := context.WithCancel(context.WithoutCancel(ctx))
	db.cancelRes = cancelRes
	go db.resolutionLoop(resCtx)
	go db.writeLoop(writerCtx)
	return db, nil
}

// migrateRiver applies River's migrations through driver, each version in
// its own transaction.
func migrateRiver(ctx context.Context, logger *slog.Logger, driver riverdriver.Driver[*sql.Tx]) error {
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Logger: logger})
	if err != nil {
		return fmt.Errorf("store: river migrator: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("store: river migrations: %w", err)
	}
	return nil
}

// openRiver builds River's client; the engine applied River's migrations.
func openRiver(cfg Config, driver riverdriver.Driver[*sql.Tx]) (*river.Client[*sql.Tx], error) {
	rc, err := river.NewClient(driver, cfg.riverConfig())
	if err != nil {
		return nil, fmt.Errorf("store: river client: %w", err)
	}
	return rc, nil
}

// Start starts working River jobs. It is a no-op when Config.Workers is nil.
// Cancelling ctx stops job working as River's Start documents; Close does
// the same gracefully.
func (db *DB) Start(ctx context.Context) error {
	if db.cfg.Workers == nil {
		return nil
	}
	select {
	case <-db.closing:
		return ErrClosed
	default:
	}
	n, err := db.eng.resumeOrphanedJobs(ctx)
	if err != nil {
		return fmt.Errorf("store: resume jobs left running: %w", err)
	}
	if n > 0 {
		db.cfg.Logger.InfoContext(ctx, "store: resumed jobs a stopped process left running", "jobs", n)
	}
	// Taken before River starts, so that the one instance of a cluster, or
	// the one on SQLite, works its leased queues from the start.
	db.leases = make(map[string]*Lease)
	db.tryLeadQueues(ctx, db.leases)
	if err := db.river.Start(ctx); err != nil {
		return errors.Join(fmt.Errorf("store: start river: %w", err), db.releaseLeases())
	}
	leadCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	db.stopLead, db.leadDone = stop, make(chan struct{})
	go func() {
		defer close(db.leadDone)
		db.leadQueues(leadCtx, db.leases)
	}()
	return nil
}

// releaseLeases gives up the leases held. River must have stopped: another
// instance may start working the queues at once.
func (db *DB) releaseLeases() error {
	var errs []error
	for q, l := range db.leases {
		errs = append(errs, l.Release())
		delete(db.leases, q)
	}
	return errors.Join(errs...)
}

// Close stops the SaveEvent writer (callers still waiting get ErrClosed),
// stops River (running jobs get Config.SoftStopTimeout before their
// contexts are cancelled), then closes the pools. It is idempotent.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		close(db.closing)
		db.cancelWriter()
		<-db.writerDone
		if db.stopLead != nil {
			db.stopLead()
			<-db.leadDone
		}

		var errs []error
		// Bound the wait: a job that ignores its cancelled context must not
		// hang shutdown forever.
		ctx, cancel := context.WithTimeout(context.Background(), db.cfg.SoftStopTimeout+5*time.Second)
		defer cancel()
		if err := db.river.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("store: stop river: %w", err))
		}
		errs = append(errs, db.releaseLeases())
		close(db.resClosing)
		db.cancelRes()
		<-db.resDone
		errs = append(errs, db.eng.close())
		db.closeErr = errors.Join(errs...)
	})
	return db.closeErr
}

// Ping checks that the database answers and that writes work: a commit
// that failed within Config.WriteFailureWindow, with none succeeding since,
// is returned as the error.
func (db *DB) Ping(ctx context.Context) error {
	if f := db.writeFailed.Load(); f != nil && db.cfg.Now().Sub(f.at) < db.cfg.WriteFailureWindow {
		return fmt.Errorf("store: last write failed: %w", f.err)
	}
	return db.eng.ping(ctx)
}

// River returns the River client, for workers (JobCompleteTx, inserts from
// jobs) and tests (subscriptions).
func (db *DB) River() *river.Client[*sql.Tx] { return db.river }

// SQL returns the write pool, which River also uses. It is an escape hatch
// for tests; see the package doc about holding its transactions.
func (db *DB) SQL() *sql.DB { return db.eng.writePool() }

// SaveEvent validates ev, stores it and enqueues its jobs in one
// transaction, then sets ev.ID, ev.State and ev.ReceivedAt.
//
// Jobs: add_external_contact and add_half_external_contact enqueue one
// ResolveArgs; add_member one ResolveArgs per member, with ChatID;
// del_external_contact and del_follow_user one EndLinkArgs. Other kinds
// enqueue nothing and get State EventRecorded, or EventIgnored for
// KindIgnored.
//
// A DedupKey that is already stored is not an error: inserted is false,
// ev's ID, State and ReceivedAt are those of the stored event, the stored
// event's duplicate counter is incremented and no job is enqueued.
//
// Calls are committed in groups (see the package doc). If ctx ends before
// the writer picks the event up, SaveEvent returns ctx's error and nothing
// is written; once picked up, it waits for the commit and returns its
// result. Returns an error wrapping ErrInvalid if ev fails Validate,
// ErrClosed after Close, or the database error (for every event in the
// failed group) if the transaction could not commit.
func (db *DB) SaveEvent(ctx context.Context, ev *Event) (inserted bool, err error) {
	if err := ev.Validate(); err != nil {
		return false, err
	}
	return db.submit(ctx, ev)
}

// FindEventByID returns the stored event with the given id, or an error
// wrapping ErrNotFound.
func (db *DB) FindEventByID(ctx context.Context, id int64) (*Event, error) {
	return db.eng.findEventByID(ctx, id)
}

// UpdateEventState sets the state and reason of event id, for the workers.
// Returns an error wrapping ErrInvalid for an unknown state, or ErrNotFound.
func (db *DB) UpdateEventState(ctx context.Context, id int64, state, reason string) error {
	if !eventStates[state] {
		return fmt.Errorf("%w: unknown event state %q", ErrInvalid, truncate(state))
	}
	if len(reason) > MaxFieldLen {
		return fmt.Errorf("%w: event reason is longer than %d bytes", ErrInvalid, MaxFieldLen)
	}
	return db.eng.updateEventState(ctx, id, state, reason, db.cfg.Now())
}

// PruneEvents deletes events received before the given time, except those
// still EventPending, and returns how many it deleted. Status counters are
// not lowered. Run it with a retention of at least 30 days, so that late
// WeCom retries are still recognised as duplicates.
func (db *DB) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	return db.eng.pruneEvents(ctx, before)
}

// Status returns event counters and the number of unfinished jobs.
func (db *DB) Status(ctx context.Context) (Status, error) {
	return db.eng.status(ctx)
}

// Counts is how many rows each of the store's tables holds, and how many
// River jobs are unfinished. Tests read it to check what a write left
// behind without SQL of their own; comparing the Counts of a database and of
// its copy verifies the copy.
type Counts struct {
	Events        int64
	Fans          int64
	FanPendingIDs int64
	Resolutions   int64
	Links         int64
	// LinksActive counts links not ended.
	LinksActive int64
	Outbox      int64
	// OutboxUndelivered counts notifications not yet delivered.
	OutboxUndelivered int64
	QuotaCounters     int64
	// Jobs counts River jobs not finished (as Status.QueuePending).
	Jobs int64
}

// Counts returns the row counts of the store's tables, read in one
// snapshot. It only reads, and scans whole tables: it is meant for tests
// and for verifying a copy, not for a status page.
func (db *DB) Counts(ctx context.Context) (Counts, error) {
	return db.eng.counts(ctx)
}

// AddQuota adds n to the counter of key for the minute bucket starting at
// bucketUnix (unix seconds), creating it at n. The limiter of package wecom
// uses it so that a restart never resets a quota.
func (db *DB) AddQuota(ctx context.Context, key string, bucketUnix int64, n int64) error {
	if key == "" || len(key) > MaxFieldLen {
		return fmt.Errorf("%w: quota key must be 1 to %d bytes", ErrInvalid, MaxFieldLen)
	}
	return db.eng.addQuota(ctx, key, bucketUnix, n)
}

// ReserveQuota counts one call in bucketUnix under key if every limit
// allows it, in one atomic step: processes sharing the database together
// never exceed a window (quota.Reserver).
func (db *DB) ReserveQuota(ctx context.Context, key string, bucketUnix int64, limits []quota.Limit) (bool, error) {
	if key == "" || len(key) > MaxFieldLen {
		return false, fmt.Errorf("%w: quota key must be 1 to %d bytes", ErrInvalid, MaxFieldLen)
	}
	return db.eng.reserveQuota(ctx, key, bucketUnix, limits)
}

// Token is a WeCom access token as SharedToken keeps it.
type Token struct {
	Value     string
	FetchedAt time.Time
	ExpiresAt time.Time
}

// SharedToken returns the token kept under key if it is valid at now and
// is not reject (one WeCom has just refused); otherwise it calls fetch and
// keeps and returns its answer. On PostgreSQL a lock on key makes the other
// instances wait for that fetch and use its token; on SQLite, one process,
// it calls fetch and keeps nothing (the WeCom client caches).
func (db *DB) SharedToken(ctx context.Context, key, reject string, now time.Time, fetch func(context.Context) (Token, error)) (Token, error) {
	return db.eng.sharedToken(ctx, key, reject, now, fetch)
}

// LoadQuota returns the counters of key whose bucket starts at or after
// sinceUnix, keyed by bucket start (unix seconds). No bucket gives an empty
// map, not an error.
func (db *DB) LoadQuota(ctx context.Context, key string, sinceUnix int64) (map[int64]int64, error) {
	return db.eng.loadQuota(ctx, key, sinceUnix)
}

// PruneQuota deletes the counters of every key whose bucket starts before
// beforeUnix and returns how many it deleted.
func (db *DB) PruneQuota(ctx context.Context, beforeUnix int64) (int64, error) {
	return db.eng.pruneQuota(ctx, beforeUnix)
}

func validInstanceID(id string) bool {
	if len(id) > 100 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
