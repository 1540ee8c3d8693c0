-- invocation counters: the highest counter of ours the meter has proven it accepted (an
-- authenticated answer to a request sent at it, or the FC field of an authenticated compact
-- frame).  Unauthenticated hints (an unciphered exception-response, the Public client's
-- frame counter) may move our counters only within a window above it.
ALTER TABLE invocation_counters ADD COLUMN proven BIGINT NOT NULL DEFAULT 0;
