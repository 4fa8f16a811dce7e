package store

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ dsn, msg string }{
		{"postgres://u:s3cret@h/db", "cannot parse `postgres://u:s3cret@h/db`: bad"},
		{"postgres://u:s3cret@h/db", "a message that repeats s3cret without a DSN"},
		{"postgres://u:s%40cret@h/db", "echoed escaped postgres://u:s%40cret@h/db, or plain s@cret"},
		{"postgres://u@h/db?password=s3cret", "failed: password=s3cret host=h"},
		{"postgres://h/db", "host=h password='s3 cret' user=u"},
		{"postgres://h/db", "dial postgresql://x:s3cret@h:5432/db"},
	} {
		got := redact(tc.msg, tc.dsn)
		require.NotContains(t, got, "s3cret", tc.msg)
		require.NotContains(t, got, "s@cret", tc.msg)
		require.NotContains(t, got, "s%40cret", tc.msg)
		require.NotContains(t, got, "s3 cret", tc.msg)
		require.Contains(t, got, "xxxxx", tc.msg)
	}
	require.Equal(t, "nothing to hide", redact("nothing to hide", "postgres://u@h/db"))

	err := redactError(context.DeadlineExceeded, "postgres://u:s3cret@h/db")
	require.ErrorIs(t, err, context.DeadlineExceeded, "the chain survives")
	require.NoError(t, redactError(nil, "postgres://u:s3cret@h/db"))
	require.False(t, errors.Is(redactError(errors.New("x"), ""), context.Canceled))
}

func TestMigrations_PostgresMirrorsSQLite(t *testing.T) {
	t.Parallel()
	lite, err := readMigrations(sqliteMigrations, "migrations/sqlite")
	require.NoError(t, err)
	pg, err := readMigrations(postgresMigrations, "migrations/postgres")
	require.NoError(t, err)
	require.Equal(t, len(lite), len(pg), "every SQLite migration has its PostgreSQL twin")
	for i := range lite {
		require.Equal(t, lite[i].version, pg[i].version)
		require.Equal(t, lite[i].name, pg[i].name)
	}
}

func TestDialect_Bind(t *testing.T) {
	t.Parallel()
	pg := &dialect{numbered: true}
	q := `SELECT a FROM t WHERE b = ? AND c = '?' AND (d, e) < (?, ?)`
	require.Equal(t, `SELECT a FROM t WHERE b = $1 AND c = '?' AND (d, e) < ($2, $3)`, pg.bind(q))
	require.Equal(t, pg.bind(q), pg.bind(q), "cached")
	require.Equal(t, q, (&dialect{}).bind(q), "SQLite keeps ?")
	require.Equal(t, "$7", pg.placeholder(7))
}
