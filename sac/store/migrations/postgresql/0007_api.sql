-- machine clients of the JSON and SOAP interfaces: a token acts as its user (its role);
-- only the token's SHA-256 is kept
CREATE TABLE api_tokens (
    id BIGSERIAL PRIMARY KEY,
    token_hash BYTEA NOT NULL UNIQUE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL,
    last_used TIMESTAMPTZ,
    revoked TIMESTAMPTZ
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- events of all meters between two times, paged in the order they occurred
DROP INDEX events_occurred;
CREATE INDEX events_occurred_id ON events (occurred, id)
