-- a job: one command (kind, params) for many meters, picked by the meter list's filter or a
-- list of LDNs.  selection describes them for people; source is the filter as JSON (or the
-- LDN list's size).  planned: the meters selected when it started; queued: the commands
-- queued so far (chunk by chunk, keyset by meter id: last_meter is the last meter id queued);
-- skipped: unknown LDNs left out at the operator's request; queued_at: when queuing ended
-- (null while under way); note: why queuing stopped early, if it did.  Its commands carry
-- its id and its expiry as their deadline
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    selection TEXT NOT NULL,
    source TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL,
    expires TIMESTAMPTZ NOT NULL,
    state TEXT NOT NULL DEFAULT 'running'
        CHECK (state IN ('running', 'finished', 'cancelled')),
    planned BIGINT NOT NULL,
    queued BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    last_meter BIGINT NOT NULL DEFAULT 0,
    queued_at TIMESTAMPTZ,
    finished TIMESTAMPTZ,
    note TEXT
);
ALTER TABLE commands ADD COLUMN job_id BIGINT REFERENCES jobs (id) ON DELETE SET NULL;
-- a job's commands by state: its progress counts (one grouped range), its pending ones to
-- cancel, a chunk's just queued to log (by id)
CREATE INDEX commands_job ON commands (job_id, state, id) WHERE job_id IS NOT NULL
