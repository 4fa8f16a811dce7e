// Package storetest is the test kit of package store: it opens real,
// migrated stores (MustOpen on SQLite, MustOpenPostgres on PostgreSQL when
// PostgresEnv is set) or makes their databases (SQLiteDSN, PostgresDSN), reads what a write left behind through the
// store's and River's APIs (MustCounts, Jobs),
// stands in for the pipeline's job policy (Policy), and holds the
// conformance suite every engine must pass (Exercise).
//
// Only tests import it. It imports testify's require, which is fine for a
// test-only package and keeps testify out of production binaries (River
// moved its helpers out of the main package for the same reason).
package storetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pendinglink/pendinglink/store"
)

// MustOpen opens a SQLite store for one test, with River's TestOnly mode
// on, and closes it when the test ends. Unless cfg.DSN is set, the store is
// a fresh database of SQLiteDSN's. It fails the test if Open fails. Call
// db.Start when cfg.Workers is set.
func MustOpen(tb testing.TB, cfg store.Config) *store.DB {
	tb.Helper()
	return mustOpen(tb, cfg, SQLiteDSN)
}

// SQLiteDSN returns the path of a fresh copy, under tb.TempDir(), of a
// SQLite database migrated once per process: copying a file is about ten
// times faster than migrating it (River's migrations dominate Open, above
// all under -race).
func SQLiteDSN(tb testing.TB) string {
	tb.Helper()
	tmpl, err := migratedTemplate()
	if err != nil {
		tb.Fatalf("storetest: %v", err)
	}
	dsn := filepath.Join(tb.TempDir(), "pendinglink.db")
	if err := os.WriteFile(dsn, tmpl, 0o600); err != nil {
		tb.Fatalf("storetest: copy template: %v", err)
	}
	return dsn
}

// mustOpen opens cfg, on a fresh database of newDSN's unless cfg.DSN is
// set, with TestOnly set, and closes it when tb ends.
func mustOpen(tb testing.TB, cfg store.Config, newDSN func(tb testing.TB) string) *store.DB {
	tb.Helper()
	if cfg.DSN == "" {
		cfg.DSN = newDSN(tb)
	}
	cfg.TestOnly = true
	db, err := store.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("storetest: open store: %v", err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("storetest: close store: %v", err)
		}
	})
	return db
}

// migratedTemplate returns the bytes of a store file with every migration
// applied. It runs once per process: that is the point of it.
var migratedTemplate = sync.OnceValues(func() ([]byte, error) {
	dir, err := os.MkdirTemp("", "storetest-template-")
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "template.db")
	db, err := store.Open(context.Background(), store.Config{DSN: path})
	if err != nil {
		return nil, fmt.Errorf("migrate template: %w", err)
	}
	// Close checkpoints the WAL into the file, so the file alone is a
	// complete copy.
	if err := db.Close(); err != nil {
		return nil, fmt.Errorf("close template: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read template: %w", err)
	}
	return b, nil
})

// MustCounts returns db.Counts, failing the test on error.
func MustCounts(tb testing.TB, db *store.DB) store.Counts {
	tb.Helper()
	c, err := db.Counts(context.Background())
	if err != nil {
		tb.Fatalf("storetest: counts: %v", err)
	}
	return c
}

var seq atomic.Int64

// NewEvent returns a valid event of the given kind with fake ids (wwtest…
// corp, wmtest… customer) and a dedup key unique in this process. Chat kinds
// get a chat id and two members. Tests set any field they care about.
func NewEvent(kind string) *store.Event {
	n := strconv.FormatInt(seq.Add(1), 10)
	ev := &store.Event{
		DedupKey:   "test-key-" + n,
		CorpID:     "wwtestcorp",
		ReceiveID:  "wwtestcorp",
		Kind:       kind,
		Event:      "change_external_contact",
		ChangeType: kind,
		UserID:     "test-staff",
		CreateTime: time.Unix(1700000000, 0).UTC(),
		Raw:        []byte("<xml>test " + n + "</xml>"),
	}
	switch kind {
	case store.KindAddMember, store.KindDelMember:
		ev.Event, ev.ChangeType = "change_external_chat", "update"
		ev.ChatID = "wrtestchat" + n
		ev.Members = []string{"wmtestmember" + n + "a", "wmtestmember" + n + "b"}
	case store.KindChatCreate, store.KindChatDismiss:
		ev.Event, ev.ChangeType = "change_external_chat", strings.TrimPrefix(kind, "chat_")
		ev.ChatID, ev.UserID = "wrtestchat"+n, ""
	case store.KindIgnored:
		ev.Event, ev.ChangeType = "test_unknown", ""
	default:
		ev.ExternalUserID = "wmtestcustomer" + n
	}
	return ev
}
