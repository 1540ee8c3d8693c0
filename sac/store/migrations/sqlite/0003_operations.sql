-- the list page's columns on the meter row, events, the command queue, users and the audit trail

-- what a session last said, so the meter list is one indexed query
ALTER TABLE meters ADD COLUMN index_value NUMERIC;
ALTER TABLE meters ADD COLUMN index_scaler INTEGER;
ALTER TABLE meters ADD COLUMN index_unit INTEGER;
ALTER TABLE meters ADD COLUMN index_captured TEXT;
ALTER TABLE meters ADD COLUMN diagnostic BIGINT;
ALTER TABLE meters ADD COLUMN battery_value INTEGER;
ALTER TABLE meters ADD COLUMN battery_unit INTEGER;
ALTER TABLE meters ADD COLUMN valve_state INTEGER;
ALTER TABLE meters ADD COLUMN status_at TEXT;
CREATE INDEX meters_state_ldn ON meters (state, ldn);
CREATE INDEX meters_pdr ON meters (pdr);
CREATE INDEX meters_last_connection ON meters (last_connection);

-- a reading read twice (a load profile polled again) is stored once
DELETE FROM readings WHERE captured IS NOT NULL AND id NOT IN
    (SELECT min(id) FROM readings WHERE captured IS NOT NULL
     GROUP BY meter_id, obis, attribute, captured);
DROP INDEX readings_meter_object_time;
CREATE UNIQUE INDEX readings_meter_object_time ON readings (meter_id, obis, attribute, captured);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    meter_id INTEGER NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
    logbook TEXT NOT NULL,
    code INTEGER NOT NULL,
    occurred TEXT NOT NULL,
    counter BIGINT,
    received TEXT NOT NULL,
    source TEXT NOT NULL
);
-- a logbook entry read twice is stored once
CREATE UNIQUE INDEX events_once ON events (meter_id, logbook, occurred, code, COALESCE(counter, -1));
CREATE INDEX events_occurred ON events (occurred);

CREATE TABLE commands (
    id INTEGER PRIMARY KEY,
    meter_id INTEGER NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sent', 'done', 'failed', 'expired', 'cancelled')),
    requested_by TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT,
    sent TEXT,
    finished TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT
);
CREATE INDEX commands_meter_state ON commands (meter_id, state);
CREATE INDEX commands_open ON commands (state) WHERE state IN ('pending', 'sent');

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    active INTEGER NOT NULL DEFAULT 1,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    address TEXT,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT
);
CREATE INDEX audit_at ON audit (at);
