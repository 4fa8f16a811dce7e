package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

// TestDBCopy runs "pendinglink db copy" from a SQLite file into another
// store (a second SQLite file, and PostgreSQL when PENDINGLINK_TEST_POSTGRES
// is set): the report lists every table and the copy is complete.
func TestDBCopy(t *testing.T) {
	t.Parallel()
	from := filepath.Join(t.TempDir(), "from.db")
	src := storetest.MustOpen(t, store.Config{DSN: from})
	_, err := src.RegisterFans(t.Context(), []store.FanInput{{UnionID: "test-u1", OpenID: "o-1"}, {UnionID: "test-u2", OpenID: "o-2"}},
		store.RegisterOpts{NoJob: true})
	require.NoError(t, err)
	require.NoError(t, src.Close())

	for _, tc := range []struct{ name, to string }{
		{"ToSQLite", filepath.Join(t.TempDir(), "to.db")},
		{"ToPostgres", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			to := tc.to
			if to == "" {
				to = storetest.EmptyPostgresDSN(t) // skips without PENDINGLINK_TEST_POSTGRES
			}
			var out, errs bytes.Buffer
			require.NoError(t, run(t.Context(), []string{"db", "copy", "--from", from, "--to", to, "--no-progress"}, mapEnv(nil), &out, &errs),
				"%s%s", out.String(), errs.String())
			require.Contains(t, out.String(), "fans                          2            2            2")
			require.NotContains(t, out.String(), "SHORT")

			dst := storetest.MustOpen(t, store.Config{DSN: to})
			f, err := dst.FindFan(t.Context(), "test-u2")
			require.NoError(t, err)
			require.Equal(t, "o-2", f.OpenID)
		})
	}

	var out, errs bytes.Buffer
	require.ErrorContains(t, run(t.Context(), []string{"db", "copy", "--from", from, "--to", from}, mapEnv(nil), &out, &errs), "the same database")

	// A DSN given without --to is refused without being echoed.
	err = run(t.Context(), []string{"db", "copy", "--from", from, "postgres://pl:" + testDBPassword + "@db/pl"}, mapEnv(nil), &out, &errs)
	require.ErrorContains(t, err, "unexpected arguments")
	require.NotContains(t, err.Error()+out.String()+errs.String(), testDBPassword)
}
