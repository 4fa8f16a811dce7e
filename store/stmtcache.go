package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
)

// stmtCache keeps one prepared statement per query text of a pool.
// modernc.org/sqlite parses every query that is not prepared, and SQLite
// compiles the tally triggers into each statement writing fans, events or
// links: before this cache, parsing took a third of the demo's CPU. pgx
// caches statements per connection by itself, so PostgreSQL pools have
// none (a nil *stmtCache runs every query unprepared).
//
// Statements are never evicted, so none is closed while in use; the cache
// stops growing at maxCachedStmts, and statements built for a number of
// rows (many placeholders, long text) are never cached, so that batches of
// every size cannot crowd out the constant queries.
type stmtCache struct {
	db *sql.DB

	mu    sync.Mutex
	stmts map[string]*sql.Stmt
	// wanted holds queries a transaction ran unprepared: preparing them
	// then would wait for the pool's connection, which the transaction
	// holds (the SQLite write pool has one). The next begin prepares them.
	wanted map[string]struct{}
}

const (
	maxCachedStmts        = 256
	maxCachedQuery        = 4096
	maxCachedPlaceholders = 24
)

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}, wanted: map[string]struct{}{}}
}

func cacheable(query string) bool {
	return len(query) <= maxCachedQuery && strings.Count(query, "?") <= maxCachedPlaceholders
}

// get returns query's statement, preparing it on the pool at its first use;
// nil means run the query unprepared (a failed prepare is reported by that
// run).
func (c *stmtCache) get(ctx context.Context, query string) *sql.Stmt {
	if c == nil || !cacheable(query) {
		return nil
	}
	c.mu.Lock()
	s, ok := c.stmts[query]
	full := len(c.stmts) >= maxCachedStmts
	c.mu.Unlock()
	if ok || full {
		return s
	}
	s, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.stmts[query]; ok || len(c.stmts) >= maxCachedStmts {
		_ = s.Close() // a concurrent get won; closing an unused statement cannot fail
		return old
	}
	c.stmts[query] = s
	return s
}

// inTx returns query's statement bound to tx if it is prepared already;
// otherwise nil, and query is noted for the next prepareWanted. The caller
// closes the statement it gets.
func (c *stmtCache) inTx(ctx context.Context, tx *sql.Tx, query string) *sql.Stmt {
	if c == nil || !cacheable(query) {
		return nil
	}
	c.mu.Lock()
	s, ok := c.stmts[query]
	if !ok && len(c.stmts)+len(c.wanted) < maxCachedStmts {
		c.wanted[query] = struct{}{}
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	return tx.StmtContext(ctx, s)
}

// prepareWanted prepares the queries transactions ran unprepared. It is
// called before a transaction takes its connection.
func (c *stmtCache) prepareWanted(ctx context.Context) {
	if c == nil {
		return
	}
	c.mu.Lock()
	if len(c.wanted) == 0 {
		c.mu.Unlock()
		return
	}
	queries := make([]string, 0, len(c.wanted))
	for q := range c.wanted {
		queries = append(queries, q)
	}
	clear(c.wanted)
	c.mu.Unlock()
	for _, q := range queries {
		c.get(ctx, q)
	}
}

// close closes every statement; the pool closes after it.
func (c *stmtCache) close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for q, s := range c.stmts {
		errs = append(errs, s.Close())
		delete(c.stmts, q)
	}
	return errors.Join(errs...)
}

// size is how many statements are prepared, for tests.
func (c *stmtCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.stmts)
}
