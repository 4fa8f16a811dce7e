-- 009_tallies: /v1/status and /v1/quota read counts kept up to date by
-- triggers instead of counting tables, so that they answer in milliseconds
-- with ten million fans (a count over them took 51 s). Triggers, not Go
-- code, keep them: every writer (the pipeline, retries, PATCH, db copy, a
-- later migration) moves them, and none can forget to.

-- fans.live_until: when the fan's newest pending_id expires (the largest
-- expires_at of its fan_pending_ids; ids are never shortened), NULL if it
-- never had one. Kept by the fan_pending_ids triggers below.
ALTER TABLE fans ADD COLUMN live_until INTEGER;
UPDATE fans SET live_until = (SELECT max(expires_at) FROM fan_pending_ids p WHERE p.unionid = fans.unionid);
-- Renewal lists fans by expiry, and the status counts the fans expiring
-- within the hour the tallies cannot split.
CREATE INDEX fans_live_until ON fans (live_until) WHERE live_until IS NOT NULL;

-- tallies: (name, part) → how many rows are in that set now.
--   events.<state>      events by state (part 0)
--   fans.<state>        fans by state (part 0)
--   fans.unchecked      registered fans never checked (part 0)
--   queue.<class>       queued fans by class, part = priority
--   live_until          fans by the hour their newest id expires, part =
--                       live_until / 3600000
--   expiry.<priority>   registered fans not queued, by the UTC day their
--                       newest id expires (part = live_until / 86400000):
--                       the renewals to come, for the forecast
--   links, links.active links, and those not ended (part 0)
-- Writer: the triggers only. Reader: PipelineStatus, Backlog,
-- ExpiringByPriority, CountFansExpiring; CheckTallies recounts them. A set
-- that empties keeps its row at 0.
CREATE TABLE tallies (
    name  TEXT    NOT NULL,
    part  INTEGER NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (name, part)
) WITHOUT ROWID;

INSERT INTO tallies (name, part, n) SELECT 'events.' || state, 0, count(*) FROM events GROUP BY state;
INSERT INTO tallies (name, part, n) SELECT 'fans.' || state, 0, count(*) FROM fans GROUP BY state;
INSERT INTO tallies (name, part, n) SELECT 'fans.unchecked', 0, count(*) FROM fans WHERE state = 'registered' AND checked_at IS NULL;
INSERT INTO tallies (name, part, n) SELECT 'queue.' || queue_class, importance, count(*) FROM fans WHERE queued_at IS NOT NULL
    GROUP BY queue_class, importance;
INSERT INTO tallies (name, part, n) SELECT 'live_until', live_until / 3600000, count(*) FROM fans WHERE live_until IS NOT NULL
    GROUP BY live_until / 3600000;
INSERT INTO tallies (name, part, n) SELECT 'expiry.' || importance, live_until / 86400000, count(*) FROM fans
    WHERE live_until IS NOT NULL AND queued_at IS NULL AND state = 'registered' GROUP BY importance, live_until / 86400000;
INSERT INTO tallies (name, part, n) SELECT 'links', 0, count(*) FROM links;
INSERT INTO tallies (name, part, n) SELECT 'links.active', 0, count(*) FROM links WHERE active = 1;

-- Each trigger adds the net change of one row's sets: +1 for each set the
-- new row is in, -1 for each the old row was in, summed so that an update
-- which leaves a set alone writes nothing.
CREATE TRIGGER events_tally_insert AFTER INSERT ON events BEGIN
    INSERT INTO tallies (name, part, n) VALUES ('events.' || NEW.state, 0, 1)
        ON CONFLICT (name, part) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER events_tally_update AFTER UPDATE OF state ON events WHEN OLD.state <> NEW.state BEGIN
    INSERT INTO tallies (name, part, n) VALUES ('events.' || OLD.state, 0, -1), ('events.' || NEW.state, 0, 1)
        ON CONFLICT (name, part) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER events_tally_delete AFTER DELETE ON events BEGIN
    UPDATE tallies SET n = n - 1 WHERE name = 'events.' || OLD.state AND part = 0;
END;

CREATE TRIGGER links_tally_insert AFTER INSERT ON links BEGIN
    INSERT INTO tallies (name, part, n) SELECT 'links', 0, 1 UNION ALL SELECT 'links.active', 0, 1 WHERE NEW.active = 1
        ON CONFLICT (name, part) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER links_tally_update AFTER UPDATE OF active ON links WHEN OLD.active <> NEW.active BEGIN
    INSERT INTO tallies (name, part, n) VALUES ('links.active', 0, NEW.active - OLD.active)
        ON CONFLICT (name, part) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER links_tally_delete AFTER DELETE ON links BEGIN
    UPDATE tallies SET n = n - 1 WHERE part = 0 AND (name = 'links' OR (name = 'links.active' AND OLD.active = 1));
END;

-- Inserts, the bulk of an import, take one small trigger per set, each run
-- only when its WHEN holds.
CREATE TRIGGER fans_tally_insert AFTER INSERT ON fans BEGIN
    INSERT INTO tallies (name, part, n) VALUES ('fans.' || NEW.state, 0, 1)
        ON CONFLICT (name, part) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER fans_tally_insert_unchecked AFTER INSERT ON fans WHEN NEW.state = 'registered' AND NEW.checked_at IS NULL BEGIN
    INSERT INTO tallies (name, part, n) VALUES ('fans.unchecked', 0, 1)
        ON CONFLICT (name, part) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER fans_tally_insert_queued AFTER INSERT ON fans WHEN NEW.queued_at IS NOT NULL BEGIN
    INSERT INTO tallies (name, part, n) VALUES ('queue.' || NEW.queue_class, NEW.importance, 1)
        ON CONFLICT (name, part) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER fans_tally_insert_live AFTER INSERT ON fans WHEN NEW.live_until IS NOT NULL BEGIN
    INSERT INTO tallies (name, part, n) VALUES ('live_until', NEW.live_until / 3600000, 1)
        ON CONFLICT (name, part) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER fans_tally_insert_expiry AFTER INSERT ON fans
WHEN NEW.live_until IS NOT NULL AND NEW.queued_at IS NULL AND NEW.state = 'registered' BEGIN
    INSERT INTO tallies (name, part, n) VALUES ('expiry.' || NEW.importance, NEW.live_until / 86400000, 1)
        ON CONFLICT (name, part) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER fans_tally_update AFTER UPDATE OF state, checked_at, queued_at, queue_class, importance, live_until ON fans BEGIN
    INSERT INTO tallies (name, part, n)
        SELECT name, part, sum(d) FROM (
            SELECT 'fans.' || NEW.state AS name, 0 AS part, 1 AS d
            UNION ALL SELECT 'fans.unchecked', 0, 1 WHERE NEW.state = 'registered' AND NEW.checked_at IS NULL
            UNION ALL SELECT 'queue.' || NEW.queue_class, NEW.importance, 1 WHERE NEW.queued_at IS NOT NULL
            UNION ALL SELECT 'live_until', NEW.live_until / 3600000, 1 WHERE NEW.live_until IS NOT NULL
            UNION ALL SELECT 'expiry.' || NEW.importance, NEW.live_until / 86400000, 1 WHERE NEW.live_until IS NOT NULL AND NEW.queued_at IS NULL AND NEW.state = 'registered'
            UNION ALL SELECT 'fans.' || OLD.state, 0, -1
            UNION ALL SELECT 'fans.unchecked', 0, -1 WHERE OLD.state = 'registered' AND OLD.checked_at IS NULL
            UNION ALL SELECT 'queue.' || OLD.queue_class, OLD.importance, -1 WHERE OLD.queued_at IS NOT NULL
            UNION ALL SELECT 'live_until', OLD.live_until / 3600000, -1 WHERE OLD.live_until IS NOT NULL
            UNION ALL SELECT 'expiry.' || OLD.importance, OLD.live_until / 86400000, -1 WHERE OLD.live_until IS NOT NULL AND OLD.queued_at IS NULL AND OLD.state = 'registered'
        ) WHERE true GROUP BY name, part HAVING sum(d) <> 0
        ON CONFLICT (name, part) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER fans_tally_delete AFTER DELETE ON fans BEGIN
    UPDATE tallies SET n = n - 1 WHERE (name = 'fans.' || OLD.state AND part = 0)
        OR (name = 'fans.unchecked' AND part = 0 AND OLD.state = 'registered' AND OLD.checked_at IS NULL)
        OR (name = 'queue.' || OLD.queue_class AND part = OLD.importance AND OLD.queued_at IS NOT NULL)
        OR (name = 'live_until' AND part = OLD.live_until / 3600000)
        OR (name = 'expiry.' || OLD.importance AND part = OLD.live_until / 86400000 AND OLD.queued_at IS NULL AND OLD.state = 'registered');
END;

CREATE TRIGGER fan_pending_ids_live_insert AFTER INSERT ON fan_pending_ids BEGIN
    UPDATE fans SET live_until = NEW.expires_at WHERE unionid = NEW.unionid AND (live_until IS NULL OR live_until < NEW.expires_at);
END;
CREATE TRIGGER fan_pending_ids_live_update AFTER UPDATE OF expires_at ON fan_pending_ids BEGIN
    UPDATE fans SET live_until = NEW.expires_at WHERE unionid = NEW.unionid AND (live_until IS NULL OR live_until < NEW.expires_at);
END;
