-- 009_tallies: /v1/status and /v1/quota read counts kept up to date by
-- triggers instead of counting tables, so that they answer in milliseconds
-- with ten million fans. Triggers, not Go code, keep them: every writer
-- moves them, and none can forget to. The SQLite twin says more.
--
-- Here the triggers are per statement, over transition tables, so that a
-- batch of 10,000 fans costs one tally update per set, not 10,000. Every
-- store write holds the write lock (lockPostgresWrites), so tally rows are
-- never updated by two transactions at once and cannot deadlock.

-- Writers of an older version may share the database while it migrates:
-- keep them out until the triggers exist, or a row they write between the
-- backfill's snapshot and the triggers would never be counted.
LOCK TABLE events, links, fans, fan_pending_ids IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE fans ADD COLUMN live_until BIGINT;
UPDATE fans SET live_until = p.exp FROM (SELECT unionid, max(expires_at) AS exp FROM fan_pending_ids GROUP BY unionid) AS p
    WHERE p.unionid = fans.unionid;
CREATE INDEX fans_live_until ON fans (live_until) WHERE live_until IS NOT NULL;

CREATE TABLE tallies (
    name  TEXT    NOT NULL,
    part  BIGINT  NOT NULL,
    n     BIGINT  NOT NULL,
    PRIMARY KEY (name, part)
);

-- The sets a row is in, as (name, part). One place per table, used by the
-- backfill and by every trigger.
CREATE FUNCTION event_tallies(state TEXT) RETURNS TABLE (name TEXT, part BIGINT) LANGUAGE sql IMMUTABLE AS $$
    SELECT 'events.' || state, 0::BIGINT
$$;
CREATE FUNCTION link_tallies(active INTEGER) RETURNS TABLE (name TEXT, part BIGINT) LANGUAGE sql IMMUTABLE AS $$
    SELECT 'links', 0::BIGINT
    UNION ALL SELECT 'links.active', 0 WHERE active = 1
$$;
CREATE FUNCTION fan_tallies(state TEXT, checked_at BIGINT, queued_at BIGINT, queue_class INTEGER, importance INTEGER, live_until BIGINT)
RETURNS TABLE (name TEXT, part BIGINT) LANGUAGE sql IMMUTABLE AS $$
    SELECT 'fans.' || state, 0::BIGINT
    UNION ALL SELECT 'fans.unchecked', 0 WHERE state = 'registered' AND checked_at IS NULL
    UNION ALL SELECT 'queue.' || queue_class, importance WHERE queued_at IS NOT NULL
    UNION ALL SELECT 'live_until', live_until / 3600000 WHERE live_until IS NOT NULL
    UNION ALL SELECT 'expiry.' || importance, live_until / 86400000 WHERE live_until IS NOT NULL AND queued_at IS NULL AND state = 'registered'
$$;

INSERT INTO tallies (name, part, n) SELECT t.name, t.part, count(*) FROM events e, event_tallies(e.state) t GROUP BY 1, 2;
INSERT INTO tallies (name, part, n) SELECT t.name, t.part, count(*) FROM links l, link_tallies(l.active) t GROUP BY 1, 2;
INSERT INTO tallies (name, part, n) SELECT t.name, t.part, count(*)
    FROM fans f, fan_tallies(f.state, f.checked_at, f.queued_at, f.queue_class, f.importance, f.live_until) t GROUP BY 1, 2;
INSERT INTO tallies (name, part, n) VALUES ('fans.unchecked', 0, 0), ('links', 0, 0), ('links.active', 0, 0)
    ON CONFLICT (name, part) DO NOTHING;

-- tally_statement adds the net change of a statement: +1 per set a new row
-- is in, -1 per set an old row was in, in key order (one lock order), and
-- nothing for a set the statement left as it was. TG_ARGV[0] is the table's
-- set function applied to a row r; the transition tables are new_rows and
-- old_rows, as each trigger below names them.
CREATE FUNCTION tally_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO tallies (name, part, n)
        SELECT name, part, sum(d) FROM (%s) AS u GROUP BY name, part HAVING sum(d) <> 0 ORDER BY name, part
        ON CONFLICT (name, part) DO UPDATE SET n = tallies.n + excluded.n',
        concat_ws(' UNION ALL ',
            CASE WHEN TG_OP <> 'DELETE' THEN format('SELECT t.name, t.part, 1 AS d FROM new_rows r, %s t', TG_ARGV[0]) END,
            CASE WHEN TG_OP <> 'INSERT' THEN format('SELECT t.name, t.part, -1 AS d FROM old_rows r, %s t', TG_ARGV[0]) END));
    RETURN NULL;
END $$;

CREATE TRIGGER events_tally_insert AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_statement('event_tallies(r.state)');
CREATE TRIGGER events_tally_update AFTER UPDATE ON events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_statement('event_tallies(r.state)');
CREATE TRIGGER events_tally_delete AFTER DELETE ON events REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_statement('event_tallies(r.state)');

CREATE TRIGGER links_tally_insert AFTER INSERT ON links REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_statement('link_tallies(r.active)');
CREATE TRIGGER links_tally_update AFTER UPDATE ON links REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_statement('link_tallies(r.active)');
CREATE TRIGGER links_tally_delete AFTER DELETE ON links REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_statement('link_tallies(r.active)');

CREATE TRIGGER fans_tally_insert AFTER INSERT ON fans REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_statement('fan_tallies(r.state, r.checked_at, r.queued_at, r.queue_class, r.importance, r.live_until)');
CREATE TRIGGER fans_tally_update AFTER UPDATE ON fans REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_statement('fan_tallies(r.state, r.checked_at, r.queued_at, r.queue_class, r.importance, r.live_until)');
CREATE TRIGGER fans_tally_delete AFTER DELETE ON fans REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_statement('fan_tallies(r.state, r.checked_at, r.queued_at, r.queue_class, r.importance, r.live_until)');

-- A new or revived pending_id extends its fan's live_until.
CREATE FUNCTION fan_pending_ids_live() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fans SET live_until = p.exp FROM (SELECT unionid, max(expires_at) AS exp FROM new_rows GROUP BY unionid) AS p
        WHERE fans.unionid = p.unionid AND (fans.live_until IS NULL OR fans.live_until < p.exp);
    RETURN NULL;
END $$;
CREATE TRIGGER fan_pending_ids_live_insert AFTER INSERT ON fan_pending_ids REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fan_pending_ids_live();
CREATE TRIGGER fan_pending_ids_live_update AFTER UPDATE ON fan_pending_ids REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fan_pending_ids_live();
