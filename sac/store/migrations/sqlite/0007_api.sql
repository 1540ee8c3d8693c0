-- machine clients of the JSON and SOAP interfaces: a token acts as its user (its role);
-- only the token's SHA-256 is kept
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created TEXT NOT NULL,
    last_used TEXT,
    revoked TEXT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);
