package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Engines, as Info.Engine names them.
const (
	EngineSQLite   = "sqlite"
	EnginePostgres = "postgres"
)

// Info describes a database as `pendinglink check` reports it.
type Info struct {
	// Engine is EngineSQLite or EnginePostgres.
	Engine string
	// ServerVersion is the SQLite library's version, or PostgreSQL's
	// server_version. Empty when the SQLite file does not exist yet.
	ServerVersion string
	// Exists is false for a SQLite file not created yet: serve creates it.
	Exists bool
	// Applied are the store's migration versions recorded in the database,
	// ascending; Known are those this build carries. Open applies the
	// known ones not yet applied.
	Applied, Known []int
	// SizeBytes is the SQLite file with its WAL, or pg_database_size.
	SizeBytes int64
}

// Pending returns the known migrations not applied yet: Open applies them.
func (i Info) Pending() []int { return missing(i.Known, i.Applied) }

// Unknown returns the applied migrations this build does not know: a newer
// pendinglink migrated the database.
func (i Info) Unknown() []int { return missing(i.Applied, i.Known) }

// missing returns the versions of a not in b.
func missing(a, b []int) []int {
	var out []int
	for _, v := range a {
		if !slices.Contains(b, v) {
			out = append(out, v)
		}
	}
	return out
}

// Inspector reads a database without changing it: no migration, no job, no
// write (on SQLite the connection is query_only). Serve may be running on
// the same database meanwhile.
type Inspector struct {
	info Info
	eng  *sqlEngine // nil when the SQLite file does not exist
	dsn  string
}

// Inspect opens dsn (a SQLite path or a postgres:// DSN, as Config.DSN) for
// reading and describes it. A SQLite file that does not exist is not an
// error (Info.Exists is false); a directory that does not exist is. Errors
// never contain the DSN's password. Close releases the connection.
func Inspect(ctx context.Context, dsn string) (_ *Inspector, err error) {
	in := &Inspector{dsn: dsn}
	defer func() {
		if err != nil {
			err = errors.Join(redactError(err, dsn), in.Close())
		}
	}()
	var dir string
	if isPostgresDSN(dsn) {
		dir = "migrations/postgres"
		in.info.Engine = EnginePostgres
		err = in.openPostgres(ctx)
	} else {
		dir = "migrations/sqlite"
		in.info.Engine = EngineSQLite
		err = in.openSQLite(ctx)
	}
	if err != nil {
		return nil, err
	}
	fsys := sqliteMigrations
	if in.info.Engine == EnginePostgres {
		fsys = postgresMigrations
	}
	migs, err := readMigrations(fsys, dir)
	if err != nil {
		return nil, err
	}
	for _, m := range migs {
		in.info.Known = append(in.info.Known, m.version)
	}
	if in.eng != nil {
		if in.info.Applied, err = in.appliedMigrations(ctx); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// sqliteFile returns the file a SQLite DSN names: a path, or a file: URI.
func sqliteFile(dsn string) string {
	p := strings.TrimPrefix(dsn, "file:")
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	return p
}

func (in *Inspector) openSQLite(ctx context.Context) error {
	if isMemoryDSN(in.dsn) {
		return fmt.Errorf("%w: in-memory SQLite is not supported; use a path", ErrInvalid)
	}
	file := sqliteFile(in.dsn)
	st, err := os.Stat(file)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// Opening would create the file; say where serve will instead, if it can.
		dir := filepath.Dir(file)
		if ds, err := os.Stat(dir); err != nil || !ds.IsDir() {
			return fmt.Errorf("store: directory %s of the SQLite file does not exist", dir)
		}
		return nil
	case err != nil:
		return fmt.Errorf("store: %w", err)
	}
	in.info.Exists = true
	in.info.SizeBytes = st.Size()
	if wal, err := os.Stat(file + "-wal"); err == nil {
		in.info.SizeBytes += wal.Size()
	}
	v := url.Values{}
	v.Add("_pragma", "busy_timeout(5000)")
	v.Add("_pragma", "query_only(1)")
	db, err := sql.Open("sqlite", sqliteDSN(in.dsn, v))
	if err != nil {
		return dbError("open", err)
	}
	db.SetMaxOpenConns(1)
	d := &dialect{strpos: "instr"}
	in.eng = &sqlEngine{d: d, write: sqlDB{DB: db, d: d}, read: sqlDB{DB: db, d: d}}
	return dbError("read SQLite version", db.QueryRowContext(ctx, `SELECT sqlite_version()`).Scan(&in.info.ServerVersion))
}

func (in *Inspector) openPostgres(ctx context.Context) error {
	connCfg, err := pgx.ParseConfig(in.dsn)
	if err != nil {
		return fmt.Errorf("%w: PostgreSQL DSN: %w", ErrInvalid, err)
	}
	db := stdlib.OpenDB(*connCfg)
	db.SetMaxOpenConns(1)
	d := &dialect{numbered: true, strpos: "strpos"}
	in.eng = &sqlEngine{d: d, write: sqlDB{DB: db, d: d}, read: sqlDB{DB: db, d: d}}
	in.info.Exists = true
	if err := db.QueryRowContext(ctx, `SELECT current_setting('server_version'), pg_database_size(current_database())`).
		Scan(&in.info.ServerVersion, &in.info.SizeBytes); err != nil {
		return dbError("connect to PostgreSQL", err)
	}
	return nil
}

// appliedMigrations reads schema_migrations; a database Open never migrated
// has none.
func (in *Inspector) appliedMigrations(ctx context.Context) ([]int, error) {
	exists := `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`
	if in.info.Engine == EnginePostgres {
		exists = `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_migrations'`
	}
	var n int
	if err := in.eng.read.QueryRowContext(ctx, exists).Scan(&n); err != nil {
		return nil, dbError("read migrations", err)
	}
	if n == 0 {
		return nil, nil
	}
	return queryRows(ctx, in.eng.read, "read migrations", `SELECT version FROM schema_migrations ORDER BY version`, scanOne[int])
}

// Info returns what Inspect found.
func (in *Inspector) Info() Info { return in.info }

// LoadQuota returns the quota counters of key from sinceUnix on, as
// DB.LoadQuota does; none before the migrations that create them ran.
func (in *Inspector) LoadQuota(ctx context.Context, key string, sinceUnix int64) (map[int64]int64, error) {
	if in.eng == nil || len(in.info.Applied) == 0 {
		return map[int64]int64{}, nil
	}
	m, err := in.eng.loadQuota(ctx, key, sinceUnix)
	return m, redactError(err, in.dsn)
}

// Close releases the connection.
func (in *Inspector) Close() error {
	if in.eng == nil {
		return nil
	}
	return in.eng.read.Close()
}
