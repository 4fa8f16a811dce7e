-- 003_reconcile: finding customers the dealers already have, or added while
-- pendinglink could not hear (unionid_to_external_userid).

-- fans.checked_at: when unionid_to_external_userid was last asked about the
-- fan, NULL if never. A registered fan never checked is checked as quota
-- allows, newest and highest priority first.
ALTER TABLE fans ADD COLUMN checked_at INTEGER;
CREATE INDEX fans_unchecked ON fans (priority DESC, created_at DESC) WHERE checked_at IS NULL AND state = 'registered';

-- reconcile_sweeps: each sweep re-checks the registered fans without an
-- active link created before registered_before, newest first. A fan checked
-- after started_at counts as done, so a sweep resumes after a restart
-- where it stopped. Writer: StartSweep, the reconcile job. Reader: status.
-- Never pruned (one row per sweep).
CREATE TABLE reconcile_sweeps (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    reason             TEXT    NOT NULL,            -- 'requested' or 'downtime'
    registered_before  INTEGER NOT NULL,
    started_at         INTEGER NOT NULL,
    finished_at        INTEGER,
    checked            INTEGER NOT NULL DEFAULT 0,
    linked             INTEGER NOT NULL DEFAULT 0
);

-- heartbeats: when each running instance last said it was alive, so that a
-- start can tell how long nobody was listening. Writer: Heartbeat. Reader:
-- Heartbeat (at start).
CREATE TABLE heartbeats (
    instance  TEXT    PRIMARY KEY,
    seen_at   INTEGER NOT NULL
) WITHOUT ROWID;
