-- every reading with its history
CREATE TABLE readings (
    id INTEGER PRIMARY KEY,
    meter_id INTEGER NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
    obis TEXT NOT NULL,
    attribute INTEGER NOT NULL,
    value NUMERIC,
    raw BLOB,
    scaler INTEGER,
    unit INTEGER,
    captured TEXT,
    received TEXT NOT NULL,
    source TEXT NOT NULL
);
-- the last N of one meter's quantity
CREATE INDEX readings_meter_object_time ON readings (meter_id, obis, attribute, captured);
-- all meters between t1 and t2 (billing export)
CREATE INDEX readings_captured ON readings (captured);
