-- seconds since 1970 of a time, whole, by the name SQLite gives it (3.38+), so that the
-- store's SQL that cuts a time range into buckets is the same for both databases.
-- date_part (a double) rather than extract (a numeric since PostgreSQL 14): three times
-- faster over a year of readings; STABLE like date_part of a timestamptz and not STRICT,
-- so that the planner inlines it
CREATE FUNCTION unixepoch(t TIMESTAMPTZ) RETURNS BIGINT
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT floor(date_part('epoch', t))::bigint $$
