package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/pendinglink/pendinglink/store"
)

// PostgresEnv names the environment variable holding the DSN of a
// PostgreSQL database and role allowed to create databases, e.g.
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable. Without it
// the PostgreSQL tests are skipped; the SQLite ones always run.
const PostgresEnv = "PENDINGLINK_TEST_POSTGRES"

// Databases the kit creates are named after the process, so that test
// binaries running side by side (go test runs packages in parallel) never
// share one, and what a crashed run left behind never breaks the next.
var (
	pgDatabases atomic.Int64
	pgTemplate  = "pendinglink_test_tmpl_" + strconv.Itoa(os.Getpid())
)

// MustOpenPostgres is MustOpen on PostgreSQL: unless cfg.DSN is set, the
// store is a database of its own, created from a template migrated once per
// process (CREATE DATABASE … TEMPLATE copies files, far faster than
// migrating) and dropped when the test ends. It skips the test when
// PostgresEnv is unset.
func MustOpenPostgres(tb testing.TB, cfg store.Config) *store.DB {
	tb.Helper()
	return mustOpen(tb, cfg, PostgresDSN)
}

// Engine is a store engine by name, with what opens a fresh store on it.
type Engine struct {
	Name string
	Open func(testing.TB, store.Config) *store.DB
}

// Engines lists every engine, for tests and benchmarks that run on each:
// SQLite always, PostgreSQL skipping without PostgresEnv.
func Engines() []Engine {
	return []Engine{{"SQLite", MustOpen}, {"Postgres", MustOpenPostgres}}
}

// PostgresDSN creates a migrated database for the test, from the template,
// drops it when the test ends and returns its DSN. It skips the test when
// PostgresEnv is unset.
func PostgresDSN(tb testing.TB) string {
	tb.Helper()
	admin := postgresAdmin(tb)
	if _, err := postgresTemplate(); err != nil {
		tb.Fatalf("storetest: %v", err)
	}
	return createPostgres(tb, admin, " TEMPLATE "+pgTemplate)
}

// EmptyPostgresDSN creates an empty database for the test, drops it when
// the test ends and returns its DSN: what Open finds on a first start. It
// skips the test when PostgresEnv is unset.
func EmptyPostgresDSN(tb testing.TB) string {
	tb.Helper()
	return createPostgres(tb, postgresAdmin(tb), "")
}

// SkipWithoutPostgres skips the test when PostgresEnv is unset, naming it:
// a suite of PostgreSQL subtests then skips once rather than in each.
func SkipWithoutPostgres(tb testing.TB) {
	tb.Helper()
	postgresAdmin(tb)
}

// postgresAdmin returns PostgresEnv's DSN, or skips the test.
func postgresAdmin(tb testing.TB) string {
	tb.Helper()
	admin := os.Getenv(PostgresEnv)
	if admin == "" {
		tb.Skipf("storetest: set %s to a PostgreSQL DSN allowed to create databases (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable) to run the PostgreSQL tests", PostgresEnv)
	}
	return admin
}

// createPostgres creates a database with the given CREATE DATABASE options,
// registers its drop and returns its DSN.
func createPostgres(tb testing.TB, admin, options string) string {
	tb.Helper()
	name := fmt.Sprintf("pendinglink_test_%d_%d", os.Getpid(), pgDatabases.Add(1))
	if err := adminExec(admin, "CREATE DATABASE "+name+options); err != nil {
		tb.Fatalf("storetest: create database: %v", err)
	}
	// Registered before the store's Close, so it runs after it; FORCE ends
	// whatever connection is left (a River listener, a test's own).
	tb.Cleanup(func() {
		if err := adminExec(admin, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("storetest: drop database: %v", err)
		}
	})
	dsn, err := withDatabase(admin, name)
	if err != nil {
		tb.Fatalf("storetest: %v", err)
	}
	return dsn
}

// postgresTemplate migrates the template database once per process and
// returns its name. Open applies every migration; Close leaves no
// connection behind, which CREATE DATABASE … TEMPLATE requires.
var postgresTemplate = sync.OnceValues(func() (string, error) {
	admin := os.Getenv(PostgresEnv)
	// A process that crashed left its template behind; one with this pid
	// would be this process's predecessor.
	if err := adminExec(admin, "DROP DATABASE IF EXISTS "+pgTemplate+" WITH (FORCE)"); err != nil {
		return "", fmt.Errorf("drop old template: %w", err)
	}
	if err := adminExec(admin, "CREATE DATABASE "+pgTemplate); err != nil {
		return "", fmt.Errorf("create template: %w", err)
	}
	dsn, err := withDatabase(admin, pgTemplate)
	if err != nil {
		return "", err
	}
	db, err := store.Open(context.Background(), store.Config{DSN: dsn})
	if err != nil {
		return "", fmt.Errorf("migrate template: %w", err)
	}
	if err := db.Close(); err != nil {
		return "", fmt.Errorf("close template: %w", err)
	}
	return pgTemplate, nil
})

// DropPostgresTemplate drops this process's template database, if it made
// one. Main calls it when the tests are over.
func DropPostgresTemplate() error {
	admin := os.Getenv(PostgresEnv)
	if admin == "" {
		return nil
	}
	return adminExec(admin, "DROP DATABASE IF EXISTS "+pgTemplate+" WITH (FORCE)")
}

// Main runs the tests of a package that uses MustOpenPostgres, then drops
// the template database; call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if err := DropPostgresTemplate(); err != nil {
		fmt.Fprintf(os.Stderr, "storetest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// adminExec runs one statement on the admin database. CREATE and DROP
// DATABASE cannot run in a transaction, so each gets its own connection.
func adminExec(admin, stmt string) error {
	db, err := sql.Open("pgx", admin)
	if err != nil {
		return err
	}
	_, err = db.Exec(stmt)
	return errors.Join(err, db.Close())
}

// withDatabase returns the admin DSN naming another database.
func withDatabase(admin, name string) (string, error) {
	u, err := url.Parse(admin)
	if err != nil {
		return "", fmt.Errorf("%s: %w", PostgresEnv, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}
