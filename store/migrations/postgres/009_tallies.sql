-- 009_tallies: /v1/status and /v1/quota read counts kept up to date by
-- triggers instead of counting tables, so that they answer in milliseconds
-- with ten million fans. Triggers, not Go code, keep them: every writer
-- moves them, and none can forget to. The SQLite twin says more.
--
-- Here the triggers are per statement, over transition tables, so that a
-- batch of 10,000 fans costs one tally update per set, not 10,000. Every
-- store write holds the write lock (lockPostgresWrites), so tally rows are
-- never updated by two transactions at once and cannot deadlock.

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
    UNION ALL SELECT 'expiry.' || importance, live_until / 86400000 WHERE live_until IS NOT NULL AND queued_at IS NULL
$$;

INSERT INTO tallies (name, part, n) SELECT t.name, t.part, count(*) FROM events e, event_tallies(e.state) t GROUP BY 1, 2;
INSERT INTO tallies (name, part, n) SELECT t.name, t.part, count(*) FROM links l, link_tallies(l.active) t GROUP BY 1, 2;
INSERT INTO tallies (name, part, n) SELECT t.name, t.part, count(*)
    FROM fans f, fan_tallies(f.state, f.checked_at, f.queued_at, f.queue_class, f.importance, f.live_until) t GROUP BY 1, 2;
INSERT INTO tallies (name, part, n) VALUES ('fans.unchecked', 0, 0), ('links', 0, 0), ('links.active', 0, 0)
    ON CONFLICT (name, part) DO NOTHING;

-- add_tallies adds the net change of a statement: +1 per set a new row is
-- in, -1 per set an old row was in, in key order (one lock order).
CREATE FUNCTION add_tallies(changes JSONB) RETURNS void LANGUAGE sql AS $$
    INSERT INTO tallies (name, part, n)
    SELECT c.name, c.part, c.n FROM jsonb_to_recordset(changes) AS c(name TEXT, part BIGINT, n BIGINT)
    WHERE c.n <> 0 ORDER BY c.name, c.part
    ON CONFLICT (name, part) DO UPDATE SET n = tallies.n + excluded.n
$$;

CREATE FUNCTION events_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM add_tallies((SELECT jsonb_agg(c) FROM (SELECT t.name, t.part, count(*) AS n
            FROM new_rows r, event_tallies(r.state) t GROUP BY 1, 2) c));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM add_tallies((SELECT jsonb_agg(c) FROM (SELECT t.name, t.part, -count(*) AS n
            FROM old_rows r, event_tallies(r.state) t GROUP BY 1, 2) c));
    ELSE
        PERFORM add_tallies((SELECT jsonb_agg(c) FROM (SELECT name, part, sum(d) AS n FROM (
            SELECT t.name, t.part, 1 AS d FROM new_rows r, event_tallies(r.state) t
            UNION ALL SELECT t.name, t.part, -1 FROM old_rows r, event_tallies(r.state) t) u GROUP BY 1, 2) c));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER events_tally_insert AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_tally();
CREATE TRIGGER events_tally_update AFTER UPDATE ON events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_tally();
CREATE TRIGGER events_tally_delete AFTER DELETE ON events REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_tally();

CREATE FUNCTION links_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM add_tallies((SELECT jsonb_agg(c) FROM (SELECT t.name, t.part, count(*) AS n
            FROM new_rows r, link_tallies(r.active) t GROUP BY 1, 2) c));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM add_tallies((SELECT jsonb_agg(c) FROM (SELECT t.name, t.part, -count(*) AS n
            FROM old_rows r, link_tallies(r.active) t GROUP BY 1, 2) c));
    ELSE
        PERFORM add_tallies((SELECT jsonb_agg(c) FROM (SELECT name, part, sum(d) AS n FROM (
            SELECT t.name, t.part, 1 AS d FROM new_rows r, link_tallies(r.active) t
            UNION ALL SELECT t.name, t.part, -1 FROM old_rows r, link_tallies(r.active) t) u GROUP BY 1, 2) c));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER links_tally_insert AFTER INSERT ON links REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION links_tally();
CREATE TRIGGER links_tally_update AFTER UPDATE ON links REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION links_tally();
CREATE TRIGGER links_tally_delete AFTER DELETE ON links REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION links_tally();

CREATE FUNCTION fans_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM add_tallies((SELECT jsonb_agg(c) FROM (SELECT t.name, t.part, count(*) AS n
            FROM new_rows r, fan_tallies(r.state, r.checked_at, r.queued_at, r.queue_class, r.importance, r.live_until) t
            GROUP BY 1, 2) c));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM add_tallies((SELECT jsonb_agg(c) FROM (SELECT t.name, t.part, -count(*) AS n
            FROM old_rows r, fan_tallies(r.state, r.checked_at, r.queued_at, r.queue_class, r.importance, r.live_until) t
            GROUP BY 1, 2) c));
    ELSE
        PERFORM add_tallies((SELECT jsonb_agg(c) FROM (SELECT name, part, sum(d) AS n FROM (
            SELECT t.name, t.part, 1 AS d
            FROM new_rows r, fan_tallies(r.state, r.checked_at, r.queued_at, r.queue_class, r.importance, r.live_until) t
            UNION ALL SELECT t.name, t.part, -1
            FROM old_rows r, fan_tallies(r.state, r.checked_at, r.queued_at, r.queue_class, r.importance, r.live_until) t
        ) u GROUP BY 1, 2) c));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER fans_tally_insert AFTER INSERT ON fans REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fans_tally();
CREATE TRIGGER fans_tally_update AFTER UPDATE ON fans REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fans_tally();
CREATE TRIGGER fans_tally_delete AFTER DELETE ON fans REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fans_tally();

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
