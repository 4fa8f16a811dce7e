-- 002_follows: who holds each dealer's customer, so that a link is active
-- exactly while somebody does, whatever order events and jobs arrive in.
-- PostgreSQL twin of migrations/sqlite/002_follows.sql.

-- events.source: the Source element of del_external_contact
-- (DELETE_BY_TRANSFER for 在职继承), '' otherwise.
ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT '';

-- follows: one row per holder of a dealer's customer, as the newest event
-- about that holder left it. A holder is a staff member (user_id set,
-- chat_id ''), a group chat (chat_id set, user_id '') or, with both '', a
-- staff member we cannot name: the colleague a transfer handed the customer
-- to (source 'transfer'), or whoever holds a customer that
-- unionid_to_external_userid reported (source 'existing'). Events apply in
-- (changed_at, event_id) order, so an older event arriving late changes
-- nothing. A link of (corp_id, external_userid) is active exactly while one
-- row is active, or while no row exists at all (nothing known, trust the
-- lookup). Writer: SaveEvent (in the event's transaction), chat member
-- lookups, LinkExisting. Reader: matching, end_link. Never pruned.
CREATE TABLE follows (
    corp_id          TEXT    NOT NULL,
    external_userid  TEXT    NOT NULL,
    user_id          TEXT    NOT NULL DEFAULT '',
    chat_id          TEXT    NOT NULL DEFAULT '',
    active           INTEGER NOT NULL CHECK (active IN (0, 1)),
    source           TEXT    NOT NULL,             -- event kind that set the state, 'transfer' or 'existing'
    changed_at       BIGINT  NOT NULL,             -- WeCom CreateTime of that event, unix seconds
    event_id         BIGINT  NOT NULL DEFAULT 0,   -- that event; orders events of the same second
    updated_at       BIGINT  NOT NULL,
    PRIMARY KEY (corp_id, external_userid, user_id, chat_id)
);
-- del_member and dismiss find a chat's members.
CREATE INDEX follows_chat ON follows (corp_id, chat_id) WHERE chat_id <> '';

-- Links made before this migration: each active one is held by whom it was
-- made through.
INSERT INTO follows (corp_id, external_userid, user_id, chat_id, active, source, changed_at, updated_at)
SELECT corp_id, external_userid, user_id, chat_id, 1, 'existing', matched_at / 1000, updated_at
FROM links WHERE active = 1
ON CONFLICT DO NOTHING;
