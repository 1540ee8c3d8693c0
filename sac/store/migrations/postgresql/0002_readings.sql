-- every reading with its history
CREATE TABLE readings (
    id BIGSERIAL PRIMARY KEY,
    meter_id BIGINT NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
    obis TEXT NOT NULL,
    attribute INTEGER NOT NULL,
    value NUMERIC,
    raw BYTEA,
    scaler INTEGER,
    unit INTEGER,
    captured TIMESTAMPTZ,
    received TIMESTAMPTZ NOT NULL,
    source TEXT NOT NULL
);
-- the last N of one meter's quantity
CREATE INDEX readings_meter_object_time ON readings (meter_id, obis, attribute, captured);
-- all meters between t1 and t2 (billing export): BRIN stays small on append-mostly time
CREATE INDEX readings_captured ON readings USING BRIN (captured);
