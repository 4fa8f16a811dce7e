package store_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

// mustInspect inspects dsn and closes the inspector when the test ends.
func mustInspect(t *testing.T, dsn string) *store.Inspector {
	t.Helper()
	in, err := store.Inspect(t.Context(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, in.Close()) })
	return in
}

func TestInspect(t *testing.T) {
	t.Parallel()

	t.Run("MigratedSQLiteWhileOpen", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "pl.db")
		db := storetest.MustOpen(t, store.Config{DSN: path})
		require.NoError(t, db.AddQuota(t.Context(), "unionid_to_pending_id:wwtest", 1_700_000_040, 7))

		in := mustInspect(t, path)
		info := in.Info()
		require.Equal(t, store.EngineSQLite, info.Engine)
		require.True(t, info.Exists)
		require.NotEmpty(t, info.ServerVersion)
		require.NotEmpty(t, info.Known)
		require.Equal(t, info.Known, info.Applied)
		require.Empty(t, info.Pending())
		require.Empty(t, info.Unknown())
		require.Positive(t, info.SizeBytes)

		got, err := in.LoadQuota(t.Context(), "unionid_to_pending_id:wwtest", 0)
		require.NoError(t, err)
		require.Equal(t, map[int64]int64{1_700_000_040: 7}, got)
	})

	t.Run("UnknownMigrationMeansANewerBuild", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "pl.db")
		db := storetest.MustOpen(t, store.Config{DSN: path})
		_, err := db.SQL().ExecContext(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'from_the_future', 0)`)
		require.NoError(t, err)

		info := mustInspect(t, path).Info()
		require.Equal(t, []int{999}, info.Unknown())
		require.Empty(t, info.Pending())
	})

	t.Run("MissingSQLiteFileIsNotCreated", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "new.db")
		in := mustInspect(t, path)
		info := in.Info()
		require.False(t, info.Exists)
		require.Empty(t, info.Applied)
		require.Equal(t, info.Known, info.Pending(), "serve applies every migration")
		got, err := in.LoadQuota(t.Context(), "unionid_to_pending_id:wwtest", 0)
		require.NoError(t, err)
		require.Empty(t, got)
		_, err = os.Stat(path)
		require.ErrorIs(t, err, os.ErrNotExist, "inspecting writes nothing")
	})

	t.Run("EmptySQLiteFileHasEverythingPending", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "empty.db")
		require.NoError(t, os.WriteFile(path, nil, 0o600))
		info := mustInspect(t, path).Info()
		require.True(t, info.Exists)
		require.Empty(t, info.Applied)
		require.Equal(t, info.Known, info.Pending())
	})

	t.Run("ErrMissingDirectory", func(t *testing.T) {
		t.Parallel()
		_, err := store.Inspect(t.Context(), filepath.Join(t.TempDir(), "no", "such", "dir", "pl.db"))
		require.ErrorContains(t, err, "does not exist")
	})

	t.Run("MigratedPostgres", func(t *testing.T) {
		t.Parallel()
		info := mustInspect(t, storetest.PostgresDSN(t)).Info()
		require.Equal(t, store.EnginePostgres, info.Engine)
		require.True(t, info.Exists)
		require.NotEmpty(t, info.ServerVersion)
		require.Equal(t, info.Known, info.Applied)
		require.Positive(t, info.SizeBytes)
	})

	t.Run("EmptyPostgresHasEverythingPending", func(t *testing.T) {
		t.Parallel()
		info := mustInspect(t, storetest.EmptyPostgresDSN(t)).Info()
		require.Empty(t, info.Applied)
		require.Equal(t, info.Known, info.Pending())
	})

	t.Run("ErrPostgresHidesThePassword", func(t *testing.T) {
		t.Parallel()
		// Nothing listens on port 1: the connection fails at once.
		_, err := store.Inspect(t.Context(), "postgres://pendinglink:s3cret-pw@127.0.0.1:1/pl?connect_timeout=2")
		require.Error(t, err)
		require.NotContains(t, err.Error(), "s3cret-pw")
	})
}
