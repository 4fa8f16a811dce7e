-- 011_renewal_learning: what WeCom answered each re-registration of a fan
-- that still held a live pending_id (protocol reference §9 #10, unconfirmed):
-- the id the fan held ('same') or a new one ('new'). Counted in the
-- transaction that records the answer, so every instance sharing the
-- database sees the same totals; the pipeline decides from them whether
-- renewing ahead of expiry is worth a call (PENDINGLINK_RENEW_EARLY=auto).
-- Writer: RecordFanPendingID. Reader: the renew job, GET /v1/quota. Never
-- pruned.
CREATE TABLE renewal_observations (
    outcome   TEXT    PRIMARY KEY,           -- 'same' or 'new'
    observed  BIGINT  NOT NULL DEFAULT 0,    -- answers seen
    last_at   BIGINT  NOT NULL DEFAULT 0     -- unix ms of the latest
);
