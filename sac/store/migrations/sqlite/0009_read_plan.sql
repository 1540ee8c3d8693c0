-- the read plan (sac.profiles.readplan): for each meter and item of its profile's plan, when
-- a session last read it, the event counter it watched as it was then, and for a profile or
-- logbook the capture time of the newest entry held (the next read starts after it)
CREATE TABLE read_plan_state (
    meter_id INTEGER NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
    quantity TEXT NOT NULL,
    read_at TEXT NOT NULL,
    counter INTEGER,
    newest TEXT,
    PRIMARY KEY (meter_id, quantity)
);
