-- meters, their keys (wrapped under the master key) and their invocation counters
CREATE TABLE store_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE meters (
    id INTEGER PRIMARY KEY,
    ldn TEXT NOT NULL UNIQUE CHECK (length(ldn) = 16),
    pdr TEXT,
    system_title BLOB UNIQUE CHECK (system_title IS NULL OR length(system_title) = 8),
    profile TEXT NOT NULL,
    address TEXT,
    allowed_ips TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    last_connection TEXT
);

CREATE TABLE meter_keys (
    meter_id INTEGER NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
    client_sap INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('ek', 'ak')),
    wrapped BLOB NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (meter_id, client_sap, role)
);

CREATE TABLE invocation_counters (
    meter_id INTEGER NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
    client_sap INTEGER NOT NULL,
    ours INTEGER NOT NULL DEFAULT 0,
    theirs INTEGER,
    PRIMARY KEY (meter_id, client_sap)
);
