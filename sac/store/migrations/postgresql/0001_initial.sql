-- meters, their keys (wrapped under the master key) and their invocation counters
CREATE TABLE store_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE meters (
    id BIGSERIAL PRIMARY KEY,
    ldn TEXT NOT NULL UNIQUE CHECK (length(ldn) = 16),
    pdr TEXT,
    system_title BYTEA UNIQUE CHECK (system_title IS NULL OR length(system_title) = 8),
    profile TEXT NOT NULL,
    address TEXT,
    allowed_ips TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),
    created TIMESTAMPTZ NOT NULL,
    updated TIMESTAMPTZ NOT NULL,
    last_connection TIMESTAMPTZ
);

CREATE TABLE meter_keys (
    meter_id BIGINT NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
    client_sap INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('ek', 'ak')),
    wrapped BYTEA NOT NULL,
    updated TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (meter_id, client_sap, role)
);

CREATE TABLE invocation_counters (
    meter_id BIGINT NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
    client_sap INTEGER NOT NULL,
    ours BIGINT NOT NULL DEFAULT 0,
    theirs BIGINT,
    PRIMARY KEY (meter_id, client_sap)
);
