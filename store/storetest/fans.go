package storetest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
)

// These read and seed what the store, pipeline and handlers tests all
// need, so each package does not write them again.

// MustEvent reads a stored event back, failing the test on error.
func MustEvent(tb testing.TB, db *store.DB, id int64) *store.Event {
	tb.Helper()
	ev, err := db.FindEventByID(tb.Context(), id)
	require.NoError(tb, err)
	return ev
}

// AddFan stores a fan (openid "o-"+unionID) without a job and, when
// pendingID is set, records it and returns the links that made.
func AddFan(tb testing.TB, db *store.DB, unionID, pendingID string) []store.Link {
	tb.Helper()
	_, err := db.RegisterFans(tb.Context(), []store.FanInput{{UnionID: unionID, OpenID: "o-" + unionID}}, store.RegisterOpts{NoJob: true})
	require.NoError(tb, err)
	if pendingID == "" {
		return nil
	}
	links, err := db.RecordFanPendingID(tb.Context(), unionID, pendingID)
	require.NoError(tb, err)
	return links
}

// MustQueue returns the registration queue's head, at most limit fans,
// failing the test on error.
func MustQueue(tb testing.TB, db *store.DB, limit int) []store.QueuedFan {
	tb.Helper()
	fans, err := db.NextFans(tb.Context(), limit)
	require.NoError(tb, err)
	return fans
}

// QueuedUnionIDs returns the unionids of the registration queue's head.
func QueuedUnionIDs(tb testing.TB, db *store.DB, limit int) []string {
	tb.Helper()
	var out []string
	for _, f := range MustQueue(tb, db, limit) {
		out = append(out, f.UnionID)
	}
	return out
}

// Resolve records a resolution and returns the links it made.
func Resolve(tb testing.TB, db *store.DB, r store.Resolution) []store.Link {
	tb.Helper()
	links, err := db.RecordResolution(tb.Context(), r)
	require.NoError(tb, err)
	return links
}
