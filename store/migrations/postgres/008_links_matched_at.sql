-- 008_links_matched_at: the status page charts the links made per hour
-- over the last day; this index makes that a range read instead of a scan
-- of every link.
CREATE INDEX links_matched_at ON links (matched_at);
