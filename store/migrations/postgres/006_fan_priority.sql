-- 006_fan_priority: the brand's priority of each fan, 1 (lowest) to 100,
-- default 50. Registrations, renewals and existing-customer checks of
-- bulk fans go highest priority first, so that when the quota cannot keep
-- every fan live the lowest-priority ones are those left to expire.
ALTER TABLE fans ADD COLUMN importance INTEGER NOT NULL DEFAULT 50;
