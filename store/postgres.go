package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
)

//go:embed migrations/postgres/*.sql
var postgresMigrations embed.FS

// Keys of the store's advisory locks. pg_advisory_lock's keys are one
// 64-bit space shared by everything using the database, so they are
// arbitrary constants unlikely to collide ("pendlnk" and a number).
const (
	// migrationLockKey is held, per session, while an instance migrates.
	migrationLockKey int64 = 0x70656e646c6e6b01
	// writeLockKey is held, per transaction, by every write transaction
	// the store begins (see lockPostgresWrites).
	writeLockKey int64 = 0x70656e646c6e6b02
)

// postgresEngine is the PostgreSQL engine: the shared sqlEngine on one
// pgx-backed database/sql pool, which several instances may share.
type postgresEngine struct {
	sqlEngine
	// listen gives River its LISTEN connection, so that a job inserted by
	// any instance starts at once instead of at the next poll. Nil for an
	// insert-only client, which listens to nothing.
	listen *pgxpool.Pool
	// instance is Config.InstanceID: the jobs its previous process left
	// running are this process's to resume.
	instance string
	// connCfg and dsn open a lease's own connection (lease.go); dsn only
	// to redact its password from errors.
	connCfg *pgx.ConnConfig
	dsn     string
	// spare keeps, per lease name, the connection of a failed try.
	spareMu sync.Mutex
	spare   map[string]*pgx.Conn
}

var _ engine = (*postgresEngine)(nil)

// isPostgresDSN reports whether dsn names a PostgreSQL database.
func isPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// openPostgres opens the pool, migrates under the migration lock and
// returns River's driver: riverdatabasesql on the pool, so that River's
// transactions are *sql.Tx as on SQLite, with a pgx listener when jobs are
// worked. Every error it returns has the DSN's password removed.
func openPostgres(ctx context.Context, cfg Config) (_ *postgresEngine, _ riverdriver.Driver[*sql.Tx], err error) {
	defer func() { err = redactError(err, cfg.DSN) }()
	connCfg, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: PostgreSQL DSN: %w", ErrInvalid, err)
	}
	// The pool's queries are short and read indexes; PostgreSQL's JIT,
	// which starts on cost estimates alone, spent 130 ms compiling a 30 ms
	// sweep query, again on every run. A DSN that sets jit, as a parameter
	// or in options, keeps its choice (a role's or database's setting does
	// not: the startup parameter wins over those), and the migrations
	// (whole-table counts) keep the server's.
	poolCfg := connCfg.Copy()
	if _, set := poolCfg.RuntimeParams["jit"]; !set && !strings.Contains(poolCfg.RuntimeParams["options"], "jit") {
		poolCfg.RuntimeParams["jit"] = "off"
	}
	d := &dialect{numbered: true, strpos: "strpos", lockWrites: lockPostgresWrites(cfg.BusyTimeout)}
	pool := sqlDB{DB: stdlib.OpenDB(*poolCfg), d: d}
	pool.SetMaxOpenConns(cfg.MaxConns)
	pool.SetMaxIdleConns(cfg.MaxConns)
	e := &postgresEngine{sqlEngine: sqlEngine{d: d, write: pool, read: pool}, instance: cfg.InstanceID, connCfg: connCfg, dsn: cfg.DSN}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.close())
		}
	}()
	// sql.Open connects lazily: connecting now reports a bad host or
	// password here.
	if err := pool.PingContext(ctx); err != nil {
		return nil, nil, dbError("connect to PostgreSQL", err)
	}

	var driver riverdriver.Driver[*sql.Tx] = riverdatabasesql.New(pool.DB)
	if cfg.Workers != nil {
		lcfg, err := pgxpool.ParseConfig(cfg.DSN)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: PostgreSQL DSN: %w", ErrInvalid, err)
		}
		// River hijacks one connection per client for LISTEN; riverdatabasesql
		// says a pool of one is enough for one client.
		lcfg.MinConns, lcfg.MaxConns = 0, 1
		if e.listen, err = pgxpool.NewWithConfig(ctx, lcfg); err != nil {
			return nil, nil, fmt.Errorf("store: PostgreSQL listener pool: %w", err)
		}
		driver = riverdatabasesql.NewWithPgxListener(pool.DB, e.listen)
	}
	if err := migratePostgres(ctx, connCfg, cfg); err != nil {
		return nil, nil, err
	}
	return e, driver, nil
}

// lockPostgresWrites returns the dialect's lockWrites. SQLite runs write
// transactions one at a time on its single writer connection, and the
// store's transactions rely on it: each reads (the fans holding a
// pending_id, the follows of a customer) and then writes what it read
// decides, so two running side by side at READ COMMITTED could each miss the
// other's row and, say, never link a fan and a customer resolved at the same
// moment. A transaction-level advisory lock gives PostgreSQL the same order,
// across every instance sharing the database. Group commit keeps the number
// of such transactions small. The wait is bounded by Config.BusyTimeout
// (lock_timeout, for this transaction only); past it the lock error maps to
// errBusy, as SQLITE_BUSY does.
func lockPostgresWrites(timeout time.Duration) func(ctx context.Context, tx *sql.Tx) error {
	lockTimeout := fmt.Sprintf("%dms", max(timeout.Milliseconds(), 1))
	return func(ctx context.Context, tx *sql.Tx) error {
		// The subquery runs first, so the timeout covers the lock's wait.
		_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($2)
			FROM (SELECT set_config('lock_timeout', $1, true)) AS t`, lockTimeout, writeLockKey)
		return err
	}
}

// migratePostgres applies the store's migrations and River's while holding
// migrationLockKey, so that instances starting together migrate one after
// the other: the later ones find everything applied. Each migration is one
// transaction (PostgreSQL's DDL is transactional).
//
// The lock is a session lock, so everything runs on a pool of exactly one
// connection, River's migrator included (it takes a pool, not a
// connection). Closing that pool ends the session, which releases the lock
// whatever failed half-way. Unlocking explicitly first also checks that the
// session was never replaced (database/sql reconnects silently when the
// server dropped an idle connection), in which case the lock was not held
// throughout.
func migratePostgres(ctx context.Context, connCfg *pgx.ConnConfig, cfg Config) (err error) {
	db := stdlib.OpenDB(*connCfg)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	defer func() { err = errors.Join(err, db.Close()) }()
	if _, err := db.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return dbError("migrations: lock", err)
	}

	const create = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version     INTEGER PRIMARY KEY,
		name        TEXT    NOT NULL,
		applied_at  BIGINT  NOT NULL
	)`
	if _, err := db.ExecContext(ctx, create); err != nil {
		return dbError("create schema_migrations", err)
	}
	migs, err := readMigrations(postgresMigrations, "migrations/postgres")
	if err != nil {
		return err
	}
	for _, m := range migs {
		if err := applyMigration(ctx, sqlDB{DB: db, d: &dialect{numbered: true}}, m, cfg.Now()); err != nil {
			return err
		}
	}
	if err := migrateRiver(ctx, cfg.Logger, riverdatabasesql.New(db)); err != nil {
		return err
	}

	var held bool
	if err := db.QueryRowContext(ctx, `SELECT pg_advisory_unlock($1)`, migrationLockKey).Scan(&held); err != nil {
		return dbError("migrations: unlock", err)
	}
	if !held {
		return errors.New("store: migrations: the connection holding the migration lock was replaced; open again")
	}
	return nil
}

// postgresErrorKind classifies a PostgreSQL error for dbError: ErrConflict,
// errBusy, or nil for any other error.
func postgresErrorKind(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return nil
	}
	switch {
	case strings.HasPrefix(pe.Code, "23"): // integrity_constraint_violation: unique, foreign key, check, not null
		return ErrConflict
	case pe.Code == "55P03", // lock_not_available: lock_timeout passed
		pe.Code == "40001", // serialization_failure
		pe.Code == "40P01": // deadlock_detected
		return errBusy
	}
	return nil
}

// resumeOrphanedJobs implements engine. Several instances share a
// PostgreSQL database, so a running job may belong to a live one: only the
// jobs of this instance's own previous process (Config.InstanceID) are
// resumed; River's rescuer makes the others available after
// Config.RescueStuckJobsAfter.
func (e *postgresEngine) resumeOrphanedJobs(ctx context.Context) (int64, error) {
	if e.instance == "" {
		return 0, nil // only River's rescue can tell whose running jobs are orphaned
	}
	// Jobs last attempted by this instance's name and still running belong
	// to its previous process: this one has not started working yet.
	res, err := e.write.ExecContext(ctx, `UPDATE river_job SET state = 'available'
		WHERE state = 'running' AND attempted_by[array_length(attempted_by, 1)] = ?`, e.instance)
	if err != nil {
		return 0, dbError("resume running jobs", err)
	}
	n, err := res.RowsAffected()
	return n, dbError("resume running jobs", err)
}

// close implements engine.
func (e *postgresEngine) close() error {
	e.closeSpares()
	if e.listen != nil {
		e.listen.Close()
	}
	if e.write.DB != nil {
		return e.write.Close()
	}
	return nil
}

// Patterns of a password in a DSN or an error message: the password of a
// URL's user info, and a password=… keyword (quoted or not).
var (
	userInfoPassword = regexp.MustCompile(`(://[^:/@\s]*:)[^@\s]*@`)
	keywordPassword  = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)`)
)

// redact removes from s the password of dsn, wherever it appears, and
// anything shaped like a password in a DSN.
func redact(s, dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			s = strings.ReplaceAll(s, pw, "xxxxx")
			s = strings.ReplaceAll(s, url.PathEscape(pw), "xxxxx")
			s = strings.ReplaceAll(s, url.QueryEscape(pw), "xxxxx")
		}
	}
	if u, err := url.Parse(dsn); err == nil {
		if pw := u.Query().Get("password"); pw != "" {
			s = strings.ReplaceAll(s, pw, "xxxxx")
			s = strings.ReplaceAll(s, url.QueryEscape(pw), "xxxxx")
		}
	}
	s = userInfoPassword.ReplaceAllString(s, "${1}xxxxx@")
	return keywordPassword.ReplaceAllString(s, "${1}xxxxx")
}

// RedactDSN returns dsn with its password replaced, for printing.
func RedactDSN(dsn string) string { return redact(dsn, dsn) }

// redactedError is an error whose message went through redact. Unwrap keeps
// errors.Is and errors.As working (context.DeadlineExceeded, ErrInvalid);
// the errors it wraps come from pgx, which does not print passwords.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactError returns err with dsn's password removed from its message; nil
// stays nil.
func redactError(err error, dsn string) error {
	if err == nil {
		return nil
	}
	return &redactedError{msg: redact(err.Error(), dsn), err: err}
}

// sharedToken implements engine. The transaction holds an advisory lock on
// the key while it reads and, if need be, fetches: the other instances'
// calls wait and then read the new token. It does not take the store's
// write lock, so callbacks are not held up by the network call.
func (e *postgresEngine) sharedToken(ctx context.Context, key, reject string, now time.Time, fetch func(context.Context) (Token, error)) (_ Token, err error) {
	tx, err := e.write.DB.BeginTx(ctx, nil)
	if err != nil {
		return Token{}, dbError("begin token", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('pendinglink token ' || $1, 0))`, key); err != nil {
		return Token{}, dbError("lock token", err)
	}
	var (
		t                Token
		fetched, expires int64
	)
	err = tx.QueryRowContext(ctx, `SELECT token, fetched_at, expires_at FROM tokens WHERE key = $1`, key).Scan(&t.Value, &fetched, &expires)
	switch {
	case err == nil && now.UnixMilli() < expires && t.Value != reject:
		t.FetchedAt, t.ExpiresAt = time.UnixMilli(fetched).UTC(), time.UnixMilli(expires).UTC()
		return t, dbError("commit token", tx.Commit())
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return Token{}, dbError("read token", err)
	}
	if t, err = fetch(ctx); err != nil {
		return Token{}, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO tokens (key, token, fetched_at, expires_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (key) DO UPDATE SET token = excluded.token, fetched_at = excluded.fetched_at, expires_at = excluded.expires_at`,
		key, t.Value, t.FetchedAt.UnixMilli(), t.ExpiresAt.UnixMilli()); err != nil {
		return Token{}, dbError("keep token", err)
	}
	return t, dbError("commit token", tx.Commit())
}
