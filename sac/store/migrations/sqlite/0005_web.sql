-- the operators' web application: signed-in browsers, sign-in lock-out, the meter list's sorts

-- a browser's session: only the SHA-256 of its token is kept, so a copy of the database
-- signs nobody in
CREATE TABLE web_sessions (
    token_hash BLOB PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    address TEXT
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

-- failed sign-ins in a row; after too many, no sign-in until locked_until
ALTER TABLE users ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_until TEXT;

-- the meter list, keyset-paged in each sort order (the LDN breaks ties)
CREATE INDEX meters_pdr_ldn ON meters (pdr, ldn);
CREATE INDEX meters_index_ldn ON meters (index_value, ldn);
CREATE INDEX meters_diagnostic_ldn ON meters (diagnostic, ldn);
CREATE INDEX meters_battery_ldn ON meters (battery_value, ldn);
CREATE INDEX meters_valve_ldn ON meters (valve_state, ldn);
CREATE INDEX meters_last_connection_ldn ON meters (last_connection, ldn);
DROP INDEX meters_pdr;
DROP INDEX meters_last_connection;
