-- 001_initial_schema: every table of pendinglink, for the whole mission.
--
-- Conventions: times are INTEGER unix milliseconds (names ending in _at),
-- except WeCom's own CreateTime, kept in unix seconds as it arrives. Ids
-- coming from WeCom are TEXT and opaque. Optional text is '' rather than NULL
-- where it is part of a unique key (NULLs are never equal in SQLite), so that
-- uniqueness holds. Tables whose ids other rows or jobs refer to use
-- AUTOINCREMENT, so an id is never reused after a prune.

-- events: one row per authentic callback, unique by dedup_key (WeCom retries
-- carry the same key). Writer: SaveEvent (group commit, with the jobs in the
-- same transaction); the resolve/end_link workers move state on. Reader:
-- workers, admin. Retention: PruneEvents deletes rows older than >= 30 days
-- by received_at; event_counters keeps the totals.
CREATE TABLE events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key        TEXT    NOT NULL UNIQUE,
    corp_id          TEXT    NOT NULL DEFAULT '',   -- ToUserName, opaque
    receive_id       TEXT    NOT NULL DEFAULT '',   -- receive id in the ciphertext
    kind             TEXT    NOT NULL,              -- store.Kind* (closed set)
    event            TEXT    NOT NULL DEFAULT '',   -- raw Event element
    change_type      TEXT    NOT NULL DEFAULT '',   -- raw ChangeType element
    user_id          TEXT    NOT NULL DEFAULT '',   -- staff userid
    external_userid  TEXT    NOT NULL DEFAULT '',
    chat_id          TEXT    NOT NULL DEFAULT '',
    members          TEXT,                          -- JSON array of member ids, NULL if none
    create_time      INTEGER,                       -- WeCom CreateTime, unix seconds; NULL if unknown
    raw              BLOB    NOT NULL,              -- decrypted plaintext, always kept
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'recorded', 'ignored', 'resolved', 'unmatched', 'failed')),
    reason           TEXT    NOT NULL DEFAULT '',   -- why ignored or failed
    duplicates       INTEGER NOT NULL DEFAULT 0,    -- deliveries after the first
    received_at      INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
-- Retention prune scans by age.
CREATE INDEX events_received_at ON events (received_at);
-- Operators and sweepers list events still open or failed; partial, so the
-- far more numerous finished events cost nothing here.
CREATE INDEX events_open ON events (state, id) WHERE state IN ('pending', 'failed');

-- event_counters: running totals per event kind for /v1/status, so Status
-- never scans events and a prune never lowers a counter. Writer: SaveEvent, in
-- the batch's transaction. Reader: Status. Never pruned.
CREATE TABLE event_counters (
    kind        TEXT    PRIMARY KEY,
    received    INTEGER NOT NULL DEFAULT 0,  -- unique events stored
    duplicates  INTEGER NOT NULL DEFAULT 0   -- repeated deliveries
) WITHOUT ROWID;

-- fans: the brand's WeChat fans to link. Writer: fan import/registration
-- (RegisterFan) and the register job. Reader: register job (by state and
-- priority), matching, admin. state: 'new' (not yet registered), 'registered'
-- (holds a live pending_id), 'failed' (registration gave up; last_error says
-- why). Never pruned.
CREATE TABLE fans (
    unionid        TEXT    PRIMARY KEY,
    openid         TEXT    NOT NULL,
    state          TEXT    NOT NULL DEFAULT 'new',
    priority       INTEGER NOT NULL DEFAULT 0,   -- higher registers first
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT    NOT NULL DEFAULT '',
    registered_at  INTEGER,                      -- last pending_id issued
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
-- The register job takes the next fans to (re-)register.
CREATE INDEX fans_state_priority ON fans (state, priority DESC, created_at);

-- fan_pending_ids: every pending_id WeCom issued for a fan (re-registering may
-- or may not return the same id, so all are kept). A pending_id matches only
-- while expires_at (issued_at + 90 days) is in the future. Writer: register
-- job. Reader: matching (by pending_id), re-registration (by expiry).
-- Retention: expired ids may be pruned; links keep their own copy.
CREATE TABLE fan_pending_ids (
    pending_id  TEXT    PRIMARY KEY,
    unionid     TEXT    NOT NULL REFERENCES fans (unionid) ON DELETE CASCADE,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX fan_pending_ids_unionid ON fan_pending_ids (unionid, expires_at);
CREATE INDEX fan_pending_ids_expires_at ON fan_pending_ids (expires_at);

-- resolutions: what WeCom answered for a customer of a dealer corp
-- (external_userid, in a chat or not) -> pending_id, matched or not, so that a
-- fan registered later links at once without a new lookup. chat_id is '' for
-- a contact. pending_id is NULL when WeCom returned none. state: 'resolved'
-- (has a pending_id, no fan yet), 'matched' (a link exists), 'unmatched' (no
-- pending_id), 'failed' (reason says why). Writer: resolve job. Reader:
-- registration backfill (by pending_id), admin.
CREATE TABLE resolutions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    corp_id          TEXT    NOT NULL,
    external_userid  TEXT    NOT NULL,
    chat_id          TEXT    NOT NULL DEFAULT '',
    user_id          TEXT    NOT NULL DEFAULT '',  -- staff who added the customer
    pending_id       TEXT,
    event_id         INTEGER,                      -- event that asked; no FK: events are pruned
    state            TEXT    NOT NULL,
    reason           TEXT    NOT NULL DEFAULT '',
    resolved_at      INTEGER NOT NULL,
    expires_at       INTEGER,                      -- when pending_id stops matching
    updated_at       INTEGER NOT NULL,
    UNIQUE (corp_id, external_userid, chat_id)
);
CREATE INDEX resolutions_pending_id ON resolutions (pending_id) WHERE pending_id IS NOT NULL;

-- links: a fan linked to a dealer's customer because their live pending_ids
-- were equal. One row per (unionid, corp_id, external_userid); a del event
-- sets active = 0 and ended_at (the row is kept), a new add re-activates it.
-- Writer: resolve and register jobs (match), end_link job. Reader: webhook,
-- admin (FindLinks). Never pruned.
CREATE TABLE links (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    unionid          TEXT    NOT NULL REFERENCES fans (unionid),
    openid           TEXT    NOT NULL,
    pending_id       TEXT    NOT NULL,             -- the id that matched
    corp_id          TEXT    NOT NULL,
    external_userid  TEXT    NOT NULL,
    user_id          TEXT    NOT NULL DEFAULT '',  -- staff userid, if added by staff
    chat_id          TEXT    NOT NULL DEFAULT '',  -- chat id, if matched through a chat
    active           INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    matched_at       INTEGER NOT NULL,
    ended_at         INTEGER,
    end_reason       TEXT    NOT NULL DEFAULT '',  -- kind of the event that ended it
    updated_at       INTEGER NOT NULL,
    UNIQUE (unionid, corp_id, external_userid)
);
-- del events find the links of a customer by corp and external_userid.
CREATE INDEX links_corp_external ON links (corp_id, external_userid);

-- outbox: webhook notifications of new and ended links, written in the same
-- transaction as the link change. Delivered in id order per link: a sender
-- takes, for each link, only its lowest undelivered row. Writer: matching and
-- end_link (insert), webhook sender (delivery). Retention: delivered rows may
-- be pruned after a while.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    link_id          INTEGER NOT NULL REFERENCES links (id),
    kind             TEXT    NOT NULL CHECK (kind IN ('link_created', 'link_ended')),
    payload          BLOB    NOT NULL,             -- JSON body sent to the webhook
    created_at       INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,             -- backoff after a failed attempt
    delivered_at     INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT    NOT NULL DEFAULT ''
);
-- Head of each link's queue.
CREATE INDEX outbox_pending_by_link ON outbox (link_id, id) WHERE delivered_at IS NULL;
-- What is due now.
CREATE INDEX outbox_pending_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;

-- quota_counters: WeCom API calls per key (API and corp) per minute bucket, so
-- that a restart never resets a quota. Writer: AddQuota. Reader: LoadQuota.
-- Retention: PruneQuota drops buckets older than the longest window.
CREATE TABLE quota_counters (
    key     TEXT    NOT NULL,
    bucket  INTEGER NOT NULL,  -- unix seconds of the minute's start
    count   INTEGER NOT NULL,
    PRIMARY KEY (key, bucket)
) WITHOUT ROWID;
CREATE INDEX quota_counters_bucket ON quota_counters (bucket);
