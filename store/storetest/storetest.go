// Package storetest opens real, migrated stores for tests of other packages.
// Only tests import it.
package storetest

import (
	"context"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pendinglink/pendinglink/store"
)

// MustOpen opens a store in a fresh file under tb.TempDir() (unless cfg.DSN
// is set), with River's TestOnly mode on, and closes it when the test ends.
// It fails the test if Open fails. Call db.Start when cfg.Workers is set.
func MustOpen(tb testing.TB, cfg store.Config) *store.DB {
	tb.Helper()
	if cfg.DSN == "" {
		cfg.DSN = filepath.Join(tb.TempDir(), "pendinglink.db")
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
	case store.KindIgnored:
		ev.Event, ev.ChangeType = "test_unknown", ""
	default:
		ev.ExternalUserID = "wmtestcustomer" + n
	}
	return ev
}
