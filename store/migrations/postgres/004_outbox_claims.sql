-- 004_outbox_claims: a webhook sender claims a link's next notification
-- for a while before it delivers it, so that senders of several processes
-- never deliver a link's notifications out of order or twice at once.
-- PostgreSQL twin of migrations/sqlite/004_outbox_claims.sql.

-- outbox.claimed_until: unix ms until which a sender holds this row (the
-- head of its link's queue); NULL or past: free. ClaimOutbox sets it,
-- MarkOutbox clears it.
ALTER TABLE outbox ADD COLUMN claimed_until BIGINT;
