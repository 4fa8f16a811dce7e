-- 012_check_order: existing-customer checks and sweeps at the scale of
-- millions of fans.
--
-- Never-checked fans are taken interactive first, then by priority, the day
-- last active (most recent first) and newest first: the index now holds that
-- whole order, so picking the next fans reads them off the index instead of
-- sorting every unchecked fan on each reconcile run.
DROP INDEX fans_unchecked;
CREATE INDEX fans_unchecked ON fans (priority DESC, importance DESC, active_day DESC, created_at DESC, unionid DESC)
    WHERE checked_at IS NULL AND state = 'registered';

-- A fan stored for an interactive registration is queued only if the call
-- does not settle it; a process killed during the call leaves it neither
-- registered nor queued. The renew job finds such fans through this index
-- and queues them.
CREATE INDEX fans_stranded ON fans (updated_at) WHERE state = 'new' AND queued_at IS NULL;

-- A chat event's state sums up its members' resolutions (a failed member
-- keeps it failed, so retrying re-drives it): they are read by event.
CREATE INDEX resolutions_event ON resolutions (event_id) WHERE event_id IS NOT NULL;

-- reconcile_sweeps.to_check: how many fans the sweep had to check when it
-- started (NULL for sweeps started before this version). Remaining is
-- to_check less checked, not a count of every registered fan on each read.
ALTER TABLE reconcile_sweeps ADD COLUMN to_check BIGINT;
