package store_test

import (
	"testing"

	"github.com/pendinglink/pendinglink/store/storetest"
)

// TestMain drops the PostgreSQL template database once every test is over.
func TestMain(m *testing.M) { storetest.Main(m) }

// TestExercisePostgres runs the conformance suite on PostgreSQL. What
// follows it is what only PostgreSQL has: several instances on one
// database, the migration and write locks, the listener.
func TestExercisePostgres(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, storetest.MustOpenPostgres)
}
