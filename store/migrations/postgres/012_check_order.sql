-- 012_check_order: existing-customer checks and sweeps at the scale of
-- millions of fans.
--
-- Never-checked fans are taken interactive first, then by priority, the day
-- last active (most recent first) and newest first: the index now holds that
-- whole order, so picking the next fans reads them off the index instead of
-- sorting every unchecked fan on each reconcile run. fans_unchecked, which
-- it replaces, stays: dropping it in this transaction would hold reads of
-- fans on PostgreSQL (DROP INDEX locks the table wholly) through every
-- index build below. It only holds the fans not yet checked.
CREATE INDEX fans_check_order ON fans (priority DESC, importance DESC, active_day DESC, created_at DESC, unionid DESC)
    WHERE checked_at IS NULL AND state = 'registered';

-- A fan stored for an interactive registration is queued only if the call
-- does not settle it; a process killed during the call leaves it neither
-- registered nor queued. The renew job finds such fans through this index
-- and queues them.
CREATE INDEX fans_stranded ON fans (updated_at) WHERE state = 'new' AND queued_at IS NULL;

-- A chat event's state sums up its members' resolutions (a failed member
-- keeps it failed, so retrying re-drives it): they are read by event.
CREATE INDEX resolutions_event ON resolutions (event_id) WHERE event_id IS NOT NULL;

-- chat_dismissals: when each chat was dismissed (WeCom's CreateTime, unix
-- seconds, as follows.changed_at). A join or member list no newer than the
-- dismissal holds nobody: WeCom's late retry of an older join, or the
-- members groupchat/get read before the dismissal was settled. Writer:
-- SaveEvent (dismiss). Reader: the follows rules. Never pruned (one row per
-- dismissed chat). Filled from the dismissals already stored.
CREATE TABLE chat_dismissals (
    corp_id       TEXT    NOT NULL,
    chat_id       TEXT    NOT NULL,
    dismissed_at  BIGINT NOT NULL,
    event_id      BIGINT NOT NULL,
    PRIMARY KEY (corp_id, chat_id)
);
INSERT INTO chat_dismissals (corp_id, chat_id, dismissed_at, event_id)
    SELECT corp_id, chat_id, min(COALESCE(create_time, received_at / 1000)), min(id)
    FROM events WHERE kind = 'chat_dismiss' AND chat_id <> '' GROUP BY corp_id, chat_id;

-- reconcile_sweeps.to_check: how many fans the sweep had to check when it
-- started (NULL for sweeps started before this version). Remaining is
-- to_check less checked, not a count of every registered fan on each read.
ALTER TABLE reconcile_sweeps ADD COLUMN to_check BIGINT;

-- A sweep walks the registered fans in its order from where its last check
-- was (cursor_*: that fan's place, NULL before the first), instead of
-- sorting every fan left on each run: those without an active link
-- (cursor_linked 0), then the linked ones, each through fans_sweep. A fan
-- that moved behind the cursor meanwhile (a new priority, a link made or
-- ended) is found by one exact pass before the sweep ends.
ALTER TABLE reconcile_sweeps ADD COLUMN cursor_linked INTEGER;
ALTER TABLE reconcile_sweeps ADD COLUMN cursor_importance INTEGER;
ALTER TABLE reconcile_sweeps ADD COLUMN cursor_day INTEGER;
ALTER TABLE reconcile_sweeps ADD COLUMN cursor_created BIGINT;
ALTER TABLE reconcile_sweeps ADD COLUMN cursor_unionid TEXT;
CREATE INDEX fans_sweep ON fans (importance DESC, active_day DESC, created_at DESC, unionid DESC) WHERE state = 'registered';
