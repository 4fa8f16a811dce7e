package store

import (
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStmtCache(t *testing.T) {
	t.Parallel()

	// inTx runs f in a write transaction of eng and commits.
	inTx := func(t *testing.T, eng *sqliteEngine, f func(tx *sqlTx)) {
		t.Helper()
		tx, err := eng.begin(t.Context())
		require.NoError(t, err)
		f(tx)
		require.NoError(t, tx.Commit())
	}
	const touch = `UPDATE fans SET openid = openid WHERE unionid = ?`

	t.Run("PreparesWhatATransactionRanAtTheNextBegin", func(t *testing.T) {
		t.Parallel()
		eng := openInternal(t, Config{}).eng.(*sqliteEngine)
		before := eng.write.stmts.size()
		inTx(t, eng, func(tx *sqlTx) {
			_, err := tx.ExecContext(t.Context(), touch, "nobody")
			require.NoError(t, err)
		})
		require.Equal(t, before, eng.write.stmts.size(), "not prepared while the transaction held the connection")
		inTx(t, eng, func(tx *sqlTx) {
			require.Equal(t, before+1, eng.write.stmts.size(), "prepared by begin")
			s := eng.write.stmts.inTx(t.Context(), tx.Tx, touch)
			require.NotNil(t, s)
			require.NoError(t, s.Close())
			_, err := tx.ExecContext(t.Context(), touch, "nobody")
			require.NoError(t, err)
		})
	})

	t.Run("ARowOutlivesTheStatementBoundToTheTransaction", func(t *testing.T) {
		t.Parallel()
		db := openInternal(t, Config{})
		eng := db.eng.(*sqliteEngine)
		_, err := db.RegisterFans(t.Context(), []FanInput{{UnionID: "u1", OpenID: "o1"}, {UnionID: "u2", OpenID: "o2"}, {UnionID: "u3", OpenID: "o3"}}, RegisterOpts{NoJob: true})
		require.NoError(t, err)
		const q = `SELECT count(*) FROM fans WHERE unionid > ?`
		count := func(tx *sqlTx) (n int) {
			require.NoError(t, tx.QueryRowContext(t.Context(), q, "u1").Scan(&n))
			return n
		}
		inTx(t, eng, func(tx *sqlTx) { count(tx) })
		inTx(t, eng, func(tx *sqlTx) {
			require.NotNil(t, eng.write.stmts.stmts[q], "prepared")
			require.Equal(t, 2, count(tx))
		})
	})

	t.Run("LeavesBatchStatementsUnprepared", func(t *testing.T) {
		t.Parallel()
		eng := openInternal(t, Config{}).eng.(*sqliteEngine)
		n := maxCachedPlaceholders + 1
		q := `SELECT count(*) FROM fans WHERE unionid IN (` + inList(n) + `)`
		args := make([]any, n)
		for i := range args {
			args[i] = "u" + strconv.Itoa(i)
		}
		for range 2 {
			var n int
			require.NoError(t, eng.read.QueryRowContext(t.Context(), q, args...).Scan(&n))
			require.Zero(t, n)
		}
		require.NotContains(t, eng.read.stmts.stmts, q)
	})

	t.Run("AQueryRunAgainInsideItsOwnRowsWorks", func(t *testing.T) {
		// modernc keeps one sqlite3_stmt per prepared statement, so the
		// same prepared query cannot run again on the connection while its
		// rows are open: a transaction's queries that return rows run
		// unprepared.
		t.Parallel()
		db := openInternal(t, Config{})
		eng := db.eng.(*sqliteEngine)
		_, err := db.RegisterFans(t.Context(), []FanInput{{UnionID: "u1", OpenID: "o1"}, {UnionID: "u2", OpenID: "o2"}}, RegisterOpts{NoJob: true})
		require.NoError(t, err)
		const q = `SELECT unionid FROM fans WHERE unionid > ? ORDER BY unionid`
		for range 3 {
			inTx(t, eng, func(tx *sqlTx) {
				rows, err := tx.QueryContext(t.Context(), q, "")
				require.NoError(t, err)
				defer rows.Close()
				for rows.Next() {
					var u, next string
					require.NoError(t, rows.Scan(&u))
					err := tx.QueryRowContext(t.Context(), q, u).Scan(&next)
					if u == "u1" {
						require.NoError(t, err)
						require.Equal(t, "u2", next)
					}
				}
				require.NoError(t, rows.Err())
			})
		}
	})

	t.Run("StopsGrowingWhenFull", func(t *testing.T) {
		t.Parallel()
		eng := openInternal(t, Config{}).eng.(*sqliteEngine)
		c := newStmtCache(eng.read.DB)
		t.Cleanup(func() { require.NoError(t, c.close()) })
		for i := range maxCachedStmts {
			require.NotNil(t, c.get(t.Context(), "SELECT "+strconv.Itoa(i)))
		}
		require.Nil(t, c.get(t.Context(), "SELECT -1"), "full")
		require.NotNil(t, c.get(t.Context(), "SELECT 0"), "what is cached stays")
		require.Equal(t, maxCachedStmts, c.size())
	})

	t.Run("PreparesAgainOnANewConnection", func(t *testing.T) {
		t.Parallel()
		eng := openInternal(t, Config{}).eng.(*sqliteEngine)
		for range 2 {
			inTx(t, eng, func(tx *sqlTx) {
				_, err := tx.ExecContext(t.Context(), touch, "nobody")
				require.NoError(t, err)
			})
		}
		// River closes a connection whose transaction was cancelled; closing
		// the idle one does the same.
		eng.write.SetMaxIdleConns(0)
		eng.write.SetMaxIdleConns(1)
		inTx(t, eng, func(tx *sqlTx) {
			_, err := tx.ExecContext(t.Context(), touch, "nobody")
			require.NoError(t, err)
		})
	})

	t.Run("ReportsTheQuerysErrorWhenItCannotPrepare", func(t *testing.T) {
		t.Parallel()
		eng := openInternal(t, Config{}).eng.(*sqliteEngine)
		_, err := eng.read.ExecContext(t.Context(), `SELECT x FROM nowhere WHERE x = ?`, 1)
		require.ErrorContains(t, err, "no such table", "the unprepared run reports what prepare found")
		require.Empty(t, eng.read.stmts.stmts)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		require.Nil(t, eng.read.stmts.get(ctx, `SELECT 1 WHERE ? = 1`), "a cancelled prepare is not cached")
	})
}
