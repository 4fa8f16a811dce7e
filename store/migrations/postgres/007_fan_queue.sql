-- 007_fan_queue: the fans table is the registration queue, instead of a
-- River job per fan, so that queueing ten million fans writes ten million
-- rows and nothing else. A fan waiting for unionid_to_pending_id has
-- queued_at set (when it joined, or was last put back after a transient
-- failure) and queue_class (1 interactive, 3 bulk, 4 renewal); its
-- pending_id or its failure clears queued_at. The one registrar of the
-- cluster takes interactive fans first (fans_queue_interactive), then the
-- rest by the fan's priority, renewals before first registrations among
-- equals (a live fan kept beats a new one), oldest first (fans_queue).
ALTER TABLE fans ADD COLUMN queued_at BIGINT;
ALTER TABLE fans ADD COLUMN queue_class INTEGER NOT NULL DEFAULT 3;
CREATE INDEX fans_queue ON fans (importance DESC, queue_class DESC, queued_at) WHERE queued_at IS NOT NULL;
CREATE INDEX fans_queue_interactive ON fans (queued_at) WHERE queued_at IS NOT NULL AND queue_class = 1;
