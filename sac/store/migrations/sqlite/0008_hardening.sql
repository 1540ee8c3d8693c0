-- invocation counters: the highest counter of ours the meter has proven it accepted (an
-- authenticated answer to a request sent at it, or the FC field of an authenticated compact
-- frame).  Unauthenticated hints (an unciphered exception-response, the Public client's
-- frame counter) may move our counters only within a window above it.
ALTER TABLE invocation_counters ADD COLUMN proven BIGINT NOT NULL DEFAULT 0;

-- the list values: which is newer is decided by when the SAC received it (its own clock; a
-- spool replay keeps the push's receipt time), never by the meter's clock, which may lag;
-- status_at and index_captured stay the capture times shown next to the values
ALTER TABLE meters ADD COLUMN values_received TEXT;
ALTER TABLE meters ADD COLUMN index_received TEXT;

-- acq: the address each meter was last heard from, so that a push without system title can
-- be matched against the meters last seen at its address (besides their allowlists)
ALTER TABLE meters ADD COLUMN last_address TEXT;
