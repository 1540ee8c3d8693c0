-- each connection with a meter, one row: a push session (the meter called in) or a poll (the
-- SAC dialled it); meter_id is null when no meter was made out (an unknown system title, a
-- connection that never pushed): the peer says where it came from.  read and skipped are
-- JSON arrays of text: the quantities read beyond the push frame, and what could not be
-- read, each with why; detail: why it was refused or failed, or a note on its end
CREATE TABLE connections (
    id BIGSERIAL PRIMARY KEY,
    meter_id BIGINT REFERENCES meters (id) ON DELETE CASCADE,
    started TIMESTAMPTZ NOT NULL,
    peer TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('push', 'poll')),
    outcome TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    read TEXT NOT NULL DEFAULT '[]',
    skipped TEXT NOT NULL DEFAULT '[]',
    detail TEXT
);
-- a meter's connections by time (its page, the API's range); all of them by time (pruning)
CREATE INDEX connections_meter_started ON connections (meter_id, started, id);
CREATE INDEX connections_started ON connections USING BRIN (started)
