-- 010_fan_last_active: when the fan was last active (unix ms, NULL:
-- unknown), as the brand reports it. Within a priority and queue class the
-- registration queue and renewals take the fans active on a later UTC day
-- first, then the oldest queued (fairness among equals): exact times would
-- leave queued_at nothing to order. The day is stored (active_day, days
-- since 1970 UTC, 0 for unknown) rather than computed by an index
-- expression: a plain NOT NULL column sorts the same on SQLite and
-- PostgreSQL (no NULLS LAST, which SQLite indexes cannot declare) and any
-- ORDER BY naming it uses the index, with no expression to repeat exactly.
ALTER TABLE fans ADD COLUMN last_active_at INTEGER;
ALTER TABLE fans ADD COLUMN active_day INTEGER NOT NULL DEFAULT 0;
DROP INDEX fans_queue;
CREATE INDEX fans_queue ON fans (importance DESC, queue_class DESC, active_day DESC, queued_at) WHERE queued_at IS NOT NULL;
