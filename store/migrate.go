package store

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// migration is one embedded schema change, applied once in its own
// transaction and recorded in schema_migrations.
type migration struct {
	version int
	name    string
	sql     string
}

var migrationName = regexp.MustCompile(`^(\d{3})_([a-z0-9_]+)\.sql$`)

// readMigrations returns the migrations in dir of fsys, ordered by version.
// A badly named file or a repeated version is an error, so that a typo
// cannot silently skip a migration.
func readMigrations(fsys fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("store: read migrations: %w", err)
	}
	var migs []migration
	seen := make(map[int]string)
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("store: migration %q: name must be NNN_name.sql", e.Name())
		}
		version, _ := strconv.Atoi(m[1]) // three digits by the pattern
		if prev, ok := seen[version]; ok {
			return nil, fmt.Errorf("store: migrations %q and %q share version %d", prev, e.Name(), version)
		}
		seen[version] = e.Name()
		body, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("store: read migration %q: %w", e.Name(), err)
		}
		migs = append(migs, migration{version: version, name: m[2], sql: string(body)})
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].version < migs[j].version })
	return migs, nil
}

// applyMigration applies m unless it is recorded, in one transaction with
// its record. The check runs in that transaction: on SQLite it is an
// immediate one, so two processes opening the same file at once cannot
// both apply it; on PostgreSQL the caller holds the migration lock.
func applyMigration(ctx context.Context, db sqlDB, m migration, now time.Time) (err error) {
	op := fmt.Sprintf("migration %03d_%s", m.version, m.name)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return dbError(op, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	var applied bool
	if err := tx.QueryRowContext(ctx, db.d.bind(`SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?)`), m.version).Scan(&applied); err != nil {
		return dbError(op, err)
	}
	if applied {
		return tx.Rollback()
	}
	// A migration file holds several statements; both drivers run them in
	// one Exec.
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return dbError(op, err)
	}
	if _, err := tx.ExecContext(ctx, db.d.bind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
		m.version, m.name, now.UnixMilli()); err != nil {
		return dbError(op, err)
	}
	return dbError(op, tx.Commit())
}
